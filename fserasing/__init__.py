"""fserasing package."""
