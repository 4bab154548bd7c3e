"""pipeline plane."""
