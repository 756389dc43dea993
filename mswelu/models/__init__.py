"""The models: configuration, presets, the HF model, baselines, FLOPs, conversion."""
