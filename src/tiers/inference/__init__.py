"""Inference on a fit: intervals, tests, variance shares, predictions and the bootstrap."""
