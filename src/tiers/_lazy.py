"""Heavy modules imported on first use, not when tiers is imported.

``scipy.stats`` alone costs 0.3-0.5 s to import (it pulls in ``scipy.spatial`` and every
distribution), more than a whole fit at 80,000 rows; a fit needs none of it, and the summaries
that do use it (p-values, intervals) only a few distributions. Modules write
``from tiers._lazy import stats`` and use ``stats.norm`` as usual; type checkers see scipy.stats.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any


class LazyModule(types.ModuleType):
    """A module imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._module: types.ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        # only called for attributes not found normally (never ``_module`` itself)
        if self._module is None:
            self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attr)


if TYPE_CHECKING:
    from scipy import stats as stats
else:
    stats = LazyModule("scipy.stats")


def submodules(package: str) -> Callable[[str], types.ModuleType]:
    """A package's module ``__getattr__`` (PEP 562) importing its submodules on first use.

    ``tiers.inference.lrtest`` then works after a plain ``import tiers`` without the package
    importing every submodule up front; a name that is not a submodule is an AttributeError.
    """

    def __getattr__(name: str) -> types.ModuleType:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
