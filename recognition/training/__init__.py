"""The recognition trainer: configuration, resumable training loop, DDP."""
