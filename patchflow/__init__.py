"""patchflow: follow a lore series onto LTS kernels, prove it, and ship it."""

__version__ = "0.1.0"
