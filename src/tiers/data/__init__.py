"""Data in: reading data files and building the model frame (y, X, the rows used)."""
