"""Moment-based fits for crossed designs too large to factor (`fit_moments`)."""

from tiers.moments.fit import fit_moments as fit_moments
from tiers.moments.result import MomentsResult as MomentsResult
