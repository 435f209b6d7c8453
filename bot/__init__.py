"""Baton: plans the work on a GitHub issue, runs coding-model workers and opens a draft PR."""
