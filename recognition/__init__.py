"""recognition package."""
