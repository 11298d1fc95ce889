"""Simulated data from nested random-intercept designs."""
