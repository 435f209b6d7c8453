"""Everything Baton says to GitHub, and how it reads what GitHub users wrote."""
