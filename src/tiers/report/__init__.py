"""Reports of fits: text summaries, the JSON document and side-by-side comparison tables."""
