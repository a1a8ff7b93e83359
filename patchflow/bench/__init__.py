"""The benchmark stage: stress-ng reclaim profiles, A/B runs and their metrics."""
