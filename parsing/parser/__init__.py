"""The face parser: models, losses, data sets, joint transforms, metrics, training, inference."""
