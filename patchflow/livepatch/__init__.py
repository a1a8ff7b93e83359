"""Live-patch modules from a patch series, verified in the target kernel, bundled for SREs.

Modules (each owns one noun):

* :mod:`~patchflow.livepatch.elf` - ELF64 ET_REL reading/writing (pure Python);
* :mod:`~patchflow.livepatch.diff` - per-function comparison of before/after objects;
* :mod:`~patchflow.livepatch.safety` - changes a live patch cannot carry, explained;
* :mod:`~patchflow.livepatch.kallsyms` - vmlinux symbols and kallsyms positions (sympos);
* :mod:`~patchflow.livepatch.extract` - cutting patched functions out, klp conversion;
* :mod:`~patchflow.livepatch.generate` - the native generator (patch + built tree -> .ko);
* :mod:`~patchflow.livepatch.backends` - kpatch-build / klp-build / native choice;
* :mod:`~patchflow.livepatch.verify` - load, effect, stress and rollback in QEMU;
* :mod:`~patchflow.livepatch.bundle` - rollout bundles and their check;
* :mod:`~patchflow.livepatch.results` - the typed details the stages hand on;
* :mod:`~patchflow.livepatch.stage` - the build and verify stages for a target.

The core takes paths (source tree, build dir, vmlinux, patch text) and knows
nothing of series or targets; :mod:`~patchflow.livepatch.stage` is that glue,
called by ``patchflow livepatch`` and the gate alike.
"""
