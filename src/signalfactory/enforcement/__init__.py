"""enforcement plane."""
