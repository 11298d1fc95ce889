"""Reports of fits: text summaries, the JSON document and side-by-side comparison tables."""


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook (PEP 562)
    # a submodule on first use (``tiers.report.comparison`` after a plain ``import tiers``)
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
