"""``python -m patchflow``."""

from patchflow.cli import main

main()
