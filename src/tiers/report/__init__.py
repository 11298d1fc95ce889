"""Reports of fits: text summaries, the JSON document and side-by-side comparison tables."""

from tiers._lazy import submodules

__getattr__ = submodules(__name__)
