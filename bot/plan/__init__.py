"""Plans: the graph of tasks the orchestrator proposes, its schema, checks and rendering."""
