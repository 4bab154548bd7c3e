"""Processing plane: the evidence bus and the signal engines (freshness, volume, drift,
compliance), incidents and alerts. Depends on the knowledge plane (the store), never on the
pipeline orchestrator."""
