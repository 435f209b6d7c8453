"""Loopback doubles that speak the real wire formats of GitHub and the model providers."""
