"""The recognition trainer: configuration and the backbone + PartialFC hooks of the shared
loop (:mod:`parsing.core.training`)."""
