"""production plane."""
