"""Likelihood engines: the profiled deviance for each grouping structure, and conditional modes."""
