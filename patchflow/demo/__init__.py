"""The offline demo: a local lore mirror and the whole pipeline on parts this machine has."""
