"""The lowest layer: files, errors, progress, statistics, distributed helpers, the command-line wrapper;
imports no other layer."""
