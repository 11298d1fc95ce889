"""The design: grouping factors, random-effects terms, covariance structures, diagnostics."""
