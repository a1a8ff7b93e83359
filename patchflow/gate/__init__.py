"""The gate: the stage registry, input hashing, the run loop and its records."""
