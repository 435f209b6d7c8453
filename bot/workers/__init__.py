"""Workers: roles, their tools, and one attempt at a task in its own worktree."""
