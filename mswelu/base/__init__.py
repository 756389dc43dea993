"""The lowest layer (files, errors, progress, statistics, distributed helpers); imports no other layer."""
