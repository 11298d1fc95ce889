"""Likelihood-ratio tests for variance components, on the boundary of the parameter space.

Each test uses the reference distribution that applies there.

Under H0 a variance sits at zero, the edge of its range, so the LR statistic is not chi2 with the
difference in parameters. Where the mixture is known in closed form (Self and Liang 1987; Stram and
Lee 1994) tiers uses it:

* one variance component removed (a random intercept, or one effect of an independent term):
  ``0.5 chi2(0) + 0.5 chi2(1)``;
* one effect removed from an unstructured term of ``q`` effects, with its variance and its ``q - 1``
  covariances (``(1 + x | g)`` against ``(1 | g)``: q = 2): ``0.5 chi2(q - 1) + 0.5 chi2(q)``;
* only covariances removed (``(x | g)`` against ``(x || g)``): nothing is on a boundary, chi2(df).

Otherwise (several components, a whole correlated term, other structures) the weights depend on
the information matrix; tiers then runs a parametric bootstrap LR test: simulate from m0's fit,
refit m0 and m1 to each replicate, and report ``(1 + #{LR* >= LR}) / (1 + B)``.
Both models must have the same fixed effects and rows; REML fits are fine (the REML likelihoods of
two models with the same fixed part are comparable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from tiers.errors import ComparisonError
from tiers.results.lrtest import LRTest
from tiers.results.result import FitResult

METHODS: tuple[str, ...] = ("auto", "mixture", "bootstrap")


def _terms(res: FitResult) -> list[tuple[tuple[str, ...], tuple[str, ...], str, Any]]:
    return [(t.factor.columns, t.znames, t.cov.kind, t) for t in res.design.terms]


def _classify(m0: FitResult, m1: FitResult) -> tuple[str, int | None]:
    """``("mixture", q)`` when a closed form applies (q the larger chi2's df), else a reason."""
    t0, t1 = _terms(m0), _terms(m1)
    by_factor0: dict[tuple[str, ...], list] = {}
    for cols, z, kind, _ in t0:
        by_factor0.setdefault(cols, []).append((z, kind))
    changed = []
    for cols, z, kind, _ in t1:
        match = [(z0, k0) for z0, k0 in by_factor0.get(cols, []) if set(z0) <= set(z)]
        if (z, kind) in match:
            by_factor0[cols].remove((z, kind))
            continue
        if match:
            by_factor0[cols].remove(match[0])
        changed.append((cols, z, kind, match[:1]))
    left = [v for v in by_factor0.values() if v]
    if left:
        raise ComparisonError(
            "m0 has random effects that m1 lacks: m0 must be m1 with some variance components "
            "removed"
        )
    if len(changed) != 1:
        return "several terms differ", None
    cols, z, kind, match = changed[0]
    if not match:
        if len(z) == 1 or kind == "identity":
            return "mixture", 1
        return "a whole term with several effects is removed", None
    z0, k0 = match[0]
    extra = len(z) - len(z0)
    if extra == 0 and k0 == "independent" and kind == "unstructured":
        return "chi2", None
    if extra != 1:
        return "more than one effect is removed from a term", None
    if kind == "independent" and k0 in ("independent", "unstructured") and len(z0) == 1:
        return "mixture", 1
    if kind == "independent" and k0 == "independent":
        return "mixture", 1
    if kind == "unstructured" and (k0 == "unstructured" or len(z0) == 1):
        return "mixture", len(z)
    return f"a {kind} term against a {k0} one", None


def vctest(
    m0: FitResult,
    m1: FitResult,
    *,
    method: str = "auto",
    n_boot: int = 1000,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> LRTest:
    """LR test that the variance components in m1 but not in m0 are zero.

    Parameters
    ----------
    m0, m1 : FitResult
        Same rows, same fixed effects, same criterion; m0's random effects a subset of m1's.
    method : {"auto", "mixture", "bootstrap"}
        ``auto``: the chi-bar-square mixture where it is known in closed form, else the parametric
        bootstrap; ``mixture`` refuses when no closed form applies.
    n_boot, seed, workers, progress
        For the parametric bootstrap.

    Raises
    ------
    ComparisonError
        Different rows, fixed effects or criteria; m0 not nested in m1; ``mixture`` without a closed
        form.
    ValueError
        Unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if m0.nobs != m1.nobs or m0.data_signature != m1.data_signature:
        raise ComparisonError(
            "the two models were fitted on different rows: refit both to the same rows"
        )
    if list(m0.xnames) != list(m1.xnames):
        raise ComparisonError(
            "the models have different fixed effects: a variance-component test compares models "
            "that differ only in their random effects (use tiers.inference.lrtest.lrtest for others)"
        )
    if m0.reml != m1.reml:
        raise ComparisonError(
            "one model was fitted by REML and the other by ML: refit both the same way"
        )
    if len(m0.theta) > len(m1.theta):
        m0, m1 = m1, m0
    kind, q = _classify(m0, m1)
    lr = max(2.0 * (m1.loglik - m0.loglik), 0.0)
    df = len(m1.theta) - len(m0.theta)
    crit = m0.method
    if kind == "mixture" and method != "bootstrap":
        assert q is not None
        p = 0.5 * (stats.chi2.sf(lr, q - 1) if q > 1 else float(lr <= 0.0)) + 0.5 * stats.chi2.sf(
            lr, q
        )
        test = f"0.5 chi2({q - 1}) + 0.5 chi2({q})"
        reason = (
            "one variance component tested at zero, on the edge of its range: a 50:50 mixture "
            "(Self and Liang 1987)"
            if q == 1
            else f"one effect and its {q - 1} covariance(s) removed from an unstructured term: a "
            "50:50 mixture (Stram and Lee 1994)"
        )
        return LRTest(lr, df, float(p), test, reason, crit, m0.loglik, m1.loglik)
    if kind == "chi2" and method != "bootstrap":
        p = float(stats.chi2.sf(lr, df))
        reason = (
            "only covariances are added, and a covariance of zero is inside its range: the usual "
            f"chi2({df}) reference distribution applies"
        )
        return LRTest(lr, df, p, f"chi2({df})", reason, crit, m0.loglik, m1.loglik)
    if method == "mixture":
        raise ComparisonError(
            f"no closed-form mixture for this comparison ({kind}); use method='bootstrap'"
        )
    from tiers.inference.bootstrap import Simulator, run

    if not np.array_equal(m0.y, m1.y):
        raise ComparisonError(
            "the two fits hold the same rows in a different order: fit both to the same data "
            "frame for a bootstrap test"
        )

    boot = run(
        Simulator.from_result(m0),
        (m0.design, m1.design),
        reml=m0.reml,
        n_boot=n_boot,
        seed=seed,
        workers=workers,
        progress=progress,
        label="bootstrap LR test",
        starts=(np.asarray(m0.theta), np.asarray(m1.theta)),
    )
    ok = boot.ok
    lr_star = np.maximum(boot.models[0].criterion - boot.models[1].criterion, 0.0)[ok]
    p = (1.0 + float(np.sum(lr_star >= lr - 1e-9))) / (1.0 + lr_star.size)
    why = (
        "the mixture weights are known in closed form only for one component or one effect of an "
        "unstructured term"
        if kind == "mixture"
        else f"no closed-form reference distribution ({kind})"
    )
    reason = (
        f"parametric bootstrap: {lr_star.size:,} replicates simulated from m0 and refitted by both "
        f"models; {why}"
        + (
            f"; {boot.n_failed:,} replicates left out (not converged or failed)"
            if boot.n_failed
            else ""
        )
    )
    return LRTest(
        lr,
        df,
        float(p),
        "parametric bootstrap",
        reason,
        crit,
        m0.loglik,
        m1.loglik,
        n_boot=boot.n_boot,
        n_failed=boot.n_failed,
    )
