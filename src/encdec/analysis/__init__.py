"""Analyses built on the model's public outputs: parameter counts (more to come)."""
