"""The backport stage: apply a series onto a target branch, patch by patch."""
