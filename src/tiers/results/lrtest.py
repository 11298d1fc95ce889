"""The one likelihood-ratio test result.

For tests against the linear model, between two fits, and of variance components (chi-bar-square
mixtures or a parametric bootstrap).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tiers.results.display import Table, html_tables, latex_tables, markdown_tables


@dataclass(frozen=True, slots=True)
class LRTest:
    """A likelihood-ratio test of a smaller model (m0) against a larger one (m1).

    Attributes
    ----------
    chi2 : float
        The statistic ``2 (loglik1 - loglik0)`` (never negative).
    df : int
        Parameters removed.
    p_value : float
    test : str
        The reference distribution: ``chi2(k)``, ``chibar2(01)``, a mixture such as
        ``0.5 chi2(0) + 0.5 chi2(1)``, or ``parametric bootstrap``.
    reason : str
        Why that reference, in words.
    method : str
        ``REML`` or ``ML``: the criterion both fits share.
    loglik0, loglik1 : float
    refitted : bool
        Both fits were refitted by ML first (REML fits with different fixed effects).
    conservative : bool
        The p-value is an upper bound (a plain chi2 for components on the boundary).
    n_boot, n_failed : int
        Parametric-bootstrap replicates used and left out (bootstrap tests only).
    """

    chi2: float
    df: int
    p_value: float
    test: str
    reason: str
    method: str
    loglik0: float
    loglik1: float
    refitted: bool = False
    conservative: bool = False
    n_boot: int = 0
    n_failed: int = 0

    def summary(self) -> str:
        """Plain text, as Stata's ``lrtest`` reads."""
        how = f"{self.method} fits{', refitted by ML' if self.refitted else ''}"
        lines = [
            f"Likelihood-ratio test ({how})",
            f"  log likelihood: m0 = {self.loglik0:.6g}, m1 = {self.loglik1:.6g}",
        ]
        if self.test.startswith(("chi2(", "chibar2(")):
            sign = ">=" if self.test.startswith("chibar2") else ">"
            name = self.test.split("(")[0]
            lines.append(
                f"  LR {self.test} = {self.chi2:.2f}    Prob {sign} {name} = {self.p_value:.4f}"
            )
        else:
            lines += [
                f"  LR = {self.chi2:.4f}, {self.df} parameter(s) removed",
                f"  test: {self.test}    p = {self.p_value:.4g}",
            ]
        return "\n".join([*lines, f"  {self.reason}"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"<LRTest {self.test}: LR = {self.chi2:.4g}, df = {self.df}, p = {self.p_value:.4g} "
            f"({self.method} fits)>"
        )

    def table(self) -> Table:
        """The test as a `tiers.results.display.Table` (the notebook displays)."""
        how = f"{self.method} fits{', refitted by ML' if self.refitted else ''}"
        rows = [
            ("Log-likelihood, smaller model (m0)", f"{self.loglik0:.6g}"),
            ("Log-likelihood, larger model (m1)", f"{self.loglik1:.6g}"),
            ("LR statistic", f"{self.chi2:.4f}"),
            ("Parameters removed", str(self.df)),
            ("Reference distribution", self.test),
            ("p-value", f"{self.p_value:.4g}"),
        ]
        if self.n_boot:
            rows.append(("Bootstrap replicates (failed)", f"{self.n_boot} ({self.n_failed})"))
        return Table.of(f"Likelihood-ratio test ({how})", None, rows, numeric_from=2,
                        notes=[self.reason])  # fmt: skip

    def _repr_html_(self) -> str:
        return html_tables([self.table()], cls="tiers-lrtest")

    def _repr_markdown_(self) -> str:
        return markdown_tables([self.table()])

    def _repr_latex_(self) -> str:
        return latex_tables([self.table()])
