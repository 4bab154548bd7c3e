"""Signal engines: each turns run history in the store into :class:`Signal` values."""
