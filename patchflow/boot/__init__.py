"""The boot stage: initramfs, QEMU, the accelerator probe and the console scan."""
