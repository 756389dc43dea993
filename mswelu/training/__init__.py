"""The parts of a training run: its config, optimizers, schedules, checkpoints, parallelism,
evaluation, variants, trackers."""
