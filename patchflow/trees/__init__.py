"""Kernel trees: the shared repository, the Debian and git providers, source worktrees."""
