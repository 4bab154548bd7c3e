"""consumption plane."""
