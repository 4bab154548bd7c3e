"""Signal Factory."""
