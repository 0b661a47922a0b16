"""Shared primitives every room stands on: errors, the package's own files and output helpers (`core`), safe file
I/O (`fileio`), the dataset layout (`layout`) and photo decoding (`images`). No torch here."""
