"""The build stages: kernel configs, kbuild runs and build logs."""
