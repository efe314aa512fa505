"""Facial attributes and expressions: models with contextual channel attention (models), data
readers for CelebA, RAF-DB, AffectNet and the synthetic set (data), metrics, and the
``python -m recognition.attributes.train`` / ``.evaluate`` commands."""
