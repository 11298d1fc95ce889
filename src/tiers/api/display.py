"""A fit's figures, HTML report and notebook displays: the methods `tiers.LmmResult` inherits.

They delegate to `tiers.report` (figures in `tiers.report.plots`, the page in
`tiers.report.document`, the tables in `tiers.report.fit_tables`), which compute from the
result's numbers and draw or render them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pandas as pd

from tiers.inference.intervals import variance_shares
from tiers.results.display import Table
from tiers.results.result import FitResult


class DisplayedFit(FitResult):
    """`FitResult` with its figures, report and notebook displays (see the module docstring)."""

    # ------------------------------------------------------------------------------ figures --

    def plot(self, kind: str = "caterpillar") -> Any:
        """One figure of the fit, a `matplotlib.figure.Figure` (needs the ``plot`` extra).

        ``kind``: ``caterpillar``, ``shrinkage``, ``qq_ranef``, ``residuals_fitted``,
        ``qq_residuals``, ``shares`` (random-intercept models) or ``zeta`` (profiles). The same
        figures with their options are functions of `tiers.plot`.
        """
        from tiers.report.plots import figure_of

        return figure_of(self, kind)

    def write_plots(self, folder: str | Path, *, fmt: str = "png") -> list[Path]:
        """Write every figure the model has into ``folder`` as ``<kind>.png`` (or ``.svg``).

        The folder is created if missing; a path that cannot be written is refused first
        (`tiers.errors.OutputError`).
        """
        from tiers.report.plots import write_plots

        paths, _ = write_plots(self, folder, fmt=cast(Any, fmt), option="folder")
        return paths

    # ------------------------------------------------------------------------------- report --

    def report(self, path: str | Path, *, level: float = 0.95, plots: bool = True) -> Path:
        """Write a self-contained HTML report of the fit to ``path`` (``tiers report``).

        The model in lme4's and Stata's syntax, the data used and dropped, the design and the
        diagnostics' notes, the coefficient and variance tables, the variance shares and ICCs
        with intervals, the likelihood-ratio test against the linear model, the convergence
        certificate and (with ``plots``, needs matplotlib) every figure of `tiers.plot`, embedded:
        the file opens without a network. See `tiers.report.document`.

        Raises
        ------
        OutputError
            ``path``'s folder does not exist, or ``path`` cannot be written; refused before any
            work.
        TypeError
            ``plots`` is not True or False.
        """
        from tiers.report.document import write_report

        if not isinstance(plots, bool):
            raise TypeError(f"plots must be True or False; got {plots!r}")
        return write_report(self, path, level=level, plots=plots)

    # ------------------------------------------------------------------------------ notebook --

    def _display_parts(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        sdi = self.sd_inference
        shares = (
            variance_shares(self, sdi.level)
            if self.intercepts_only and self.one_residual_variance
            else None
        )
        return self.coef_table(sdi.level), shares

    def _display_tables(self) -> list[Table]:
        from tiers.report.fit_tables import fit_tables

        coef, shares = self._display_parts()
        sdi = self.sd_inference
        return fit_tables(self, coef, sdi, self.corr_inference, sdi.level, shares)

    def _repr_html_(self) -> str:
        from tiers.report.html import result_html

        coef, shares = self._display_parts()
        sdi = self.sd_inference
        return result_html(self, coef, sdi, self.corr_inference, sdi.level, shares)

    def _repr_markdown_(self) -> str:
        from tiers.results.display import markdown_tables

        return markdown_tables(self._display_tables(), [*self.notes, *self.warnings])

    def _repr_latex_(self) -> str:
        from tiers.results.display import latex_tables

        return latex_tables(self._display_tables())
