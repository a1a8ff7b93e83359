"""Series from lore: b4 fetches, version tracking, range-diffs, the check-newer stage."""
