"""Minimising the profiled deviance over theta, and the numerical derivatives it uses."""
