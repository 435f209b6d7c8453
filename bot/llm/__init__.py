"""Models: one tool-calling interface over Anthropic and OpenAI, with usage, cost and budgets."""
