"""The variance parameters on the data scale, and their observed information."""
