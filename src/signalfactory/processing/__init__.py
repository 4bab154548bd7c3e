"""processing plane."""
