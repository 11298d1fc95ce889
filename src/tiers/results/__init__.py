"""Results as values: the frozen fit result and the likelihood-ratio test result."""
