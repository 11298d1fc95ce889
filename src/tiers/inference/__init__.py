"""Inference on a fit: intervals, tests, variance shares, predictions and the bootstrap."""

from tiers._lazy import submodules

__getattr__ = submodules(__name__)
