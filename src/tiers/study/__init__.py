"""Simulation studies and design planning: replicates, summaries, figures, expected SEs."""
