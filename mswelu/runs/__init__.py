"""The run folder, resuming, the checks before a run, its metrics log, Hub files and the run index."""
