"""Real photographs: packaged photos, face detection and landmarks, landmark-based
annotation and region editing."""
