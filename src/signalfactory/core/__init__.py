"""Pure domain core: records, errors and protocols. Imports nothing above it."""
