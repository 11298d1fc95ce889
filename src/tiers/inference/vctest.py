"""Likelihood-ratio tests for variance components, on the boundary of the parameter space.

Each test uses the reference distribution that applies there.

Under H0 a variance sits at zero, the edge of its range, so the LR statistic is not chi2 with the
difference in parameters. The two models' random parts are compared term by term
(`variance_difference`): which variances are added (each on the boundary under H0) and which other
variance parameters (covariances, the variances an identity structure ties together): these are
inside their range. Where the mixture is known in closed form tiers uses it:

* exactly one variance added (a random intercept, one effect of an independent term, or one effect
  of an unstructured term of ``q`` effects with its ``q - 1`` covariances, as ``(1 + x | g)``
  against ``(1 | g)``), with ``k`` parameters in all: ``0.5 chi2(k - 1) + 0.5 chi2(k)`` (Self and
  Liang 1987; Stram and Lee 1994). Near H0 the alternative is a half-space (the new variance
  ``>= 0``, every other parameter free), and the LR statistic for a half-space has this mixture
  whatever the information matrix;
* no variance added, only parameters inside their range (``(x | g)`` against ``(x || g)``):
  chi2(k).

Otherwise (several variances added, a whole correlated term) the weights depend on the information
matrix; tiers then runs a parametric bootstrap LR test: simulate from m0's fit, refit m0 and m1 to
each replicate, and report ``(1 + #{LR* >= LR}) / (1 + B)``.
Both models must have the same fixed effects and rows; REML fits are fine (the REML likelihoods of
two models with the same fixed part are comparable).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiers._lazy import stats
from tiers.errors import ComparisonError, ConvergenceWarning
from tiers.results.lrtest import LRTest
from tiers.results.result import FitResult

METHODS: tuple[str, ...] = ("auto", "mixture", "bootstrap")

#: A log-likelihood ratio below zero by less than this is round-off at a shared optimum (an SD
#: estimated at zero in the larger model), not a larger model that fits worse.
LR_ROUNDOFF = 1e-6


@dataclass(frozen=True)
class VarianceDifference:
    """How the random part of m1 extends m0's, term by term.

    Attributes
    ----------
    n_params : int
        Variance parameters (theta) m1 adds.
    n_boundary : int
        Variances added, each tested at zero, on the edge of its range.
    unknown : str
        Why no closed-form mixture applies ("" when one does, or when nothing is on the boundary).
    added : tuple of str
        What m1 adds, in words (``the variance of cses on school with its 1 covariance(s)``).
    """

    n_params: int
    n_boundary: int
    unknown: str
    added: tuple[str, ...]

    @property
    def same(self) -> bool:
        """The two random parts are the same."""
        return self.n_params == 0 and self.n_boundary == 0

    @property
    def described(self) -> str:
        """What is added, in one phrase."""
        return "; ".join(self.added)


_Term = tuple[tuple[str, ...], str, Any]  # (znames, covariance kind, the design's term)


def _same_factor(a: Any, b: Any, same_rows: bool) -> bool:
    """Two grouping factors with the same columns or (rows in the same order) the same partition.

    Names may differ: ``school_id`` with unique ids groups as ``school_id:dist_id`` does.
    """
    if set(a.columns) == set(b.columns):
        return True
    if not same_rows or a.nlevels != b.nlevels:
        return False
    n = int(a.nlevels)
    return bool(np.unique(a.codes.astype(np.int64) * n + b.codes).size == n)


def _fits_in(z0: tuple[str, ...], k0: str, z1: tuple[str, ...], k1: str) -> bool:
    """Every covariance matrix of term (z0, k0), padded with zeros, is one of term (z1, k1)."""
    if not set(z0) <= set(z1):
        return False
    if len(z1) == 1 or k1 == "unstructured":
        return True
    if len(z0) == 1 or k1 == "independent":
        return k1 == "independent" and (len(z0) == 1 or k0 in ("independent", "identity"))
    # identity and exchangeable terms tie their effects: only the same effects fit
    return set(z0) == set(z1) and (k0 == "identity" or k0 == k1)


def _contained(t0: _Term, terms1: list[_Term]) -> bool:
    z0, k0, _ = t0
    if any(_fits_in(z0, k0, z1, k1) for z1, k1, _ in terms1):
        return True
    if k0 in ("independent", "identity"):  # a diagonal term may spread over several terms
        return all(any(_fits_in((z,), k0, z1, k1) for z1, k1, _ in terms1) for z in z0)
    return False


def _show(t: Any) -> str:
    z = ", ".join(t.znames)
    return z if len(t.znames) == 1 else f"{z}; {t.cov.kind}"


def variance_difference(m0: FitResult, m1: FitResult) -> VarianceDifference:
    """Compare the random parts term by term: what m1 adds to m0.

    Raises
    ------
    ComparisonError
        m0's random part is not contained in m1's (a grouping factor, an effect or a covariance
        of m0 that m1 lacks).
    """
    same_rows = bool(np.array_equal(m0.y, m1.y))
    factors: list[tuple[Any, list[_Term], list[_Term]]] = []
    for t in m1.design.terms:
        entry = (t.znames, t.cov.kind, t)
        for f, terms1, _ in factors:
            if _same_factor(f, t.factor, True):
                terms1.append(entry)
                break
        else:
            factors.append((t.factor, [entry], []))
    for t in m0.design.terms:
        for f, terms1, terms0 in factors:
            if _same_factor(t.factor, f, same_rows) and _contained(
                (t.znames, t.cov.kind, t), terms1
            ):
                terms0.append((t.znames, t.cov.kind, t))
                break
        else:
            raise ComparisonError(
                f"the models are not nested: the smaller model's random-effects term for "
                f"{t.name} ({_show(t)}) is not part of the larger "
                "model's random effects; every term of the smaller model must be in the larger one "
                "(the same grouping, the same effects, a covariance structure that contains it)"
            )
    n_boundary, accounted = 0, 0
    unknown: list[str] = []
    added: list[str] = []
    for _, terms1, terms0 in factors:
        v0 = {z for z0, _, _ in terms0 for z in z0}
        for z1, k1, t1 in terms1:
            new = [z for z in z1 if z not in v0]
            tied = len(z1) > 1 and k1 in ("identity", "exchangeable")
            if tied and len(new) not in (0, len(z1)):
                raise ComparisonError(
                    f"the models are not nested: the larger model's {k1} term for {t1.name} ties "
                    f"{', '.join(z1)} together, but the smaller model has only some of them"
                )
            old = [z for z in z1 if z not in new]
            if k1 == "unstructured" and len(old) > 1:
                free0 = {
                    frozenset((a, b))
                    for z0, k0, _ in terms0
                    if k0 in ("unstructured", "exchangeable")
                    for i, a in enumerate(z0)
                    for b in z0[i + 1 :]
                }
                pairs = [
                    (a, b)
                    for i, a in enumerate(old)
                    for b in old[i + 1 :]
                    if frozenset((a, b)) not in free0
                ]
                accounted += len(pairs)
                added += [f"the covariance of {a} and {b} on {t1.name}" for a, b in pairs]
            if not new:
                continue
            if tied:  # one SD for all its effects (and one correlation when exchangeable)
                n_boundary += 1
                accounted += t1.cov.n_theta
                added.append(f"the {k1} term ({', '.join(z1)}) on {t1.name}")
                if k1 == "exchangeable":
                    unknown.append("a whole exchangeable term is added")
                continue
            n, q = len(new), len(z1)
            n_boundary += n
            cov = n * (n - 1) // 2 + n * (q - n) if k1 == "unstructured" else 0
            accounted += n + cov
            what = f"the variance{'s' if n > 1 else ''} of {', '.join(new)} on {t1.name}"
            added.append(what + (f" with {cov} covariance(s)" if cov else ""))
            if n > 1:
                unknown.append(
                    "a whole term with several effects is added"
                    if n == q
                    else "more than one effect is added to a term"
                )
    n_params = m1.design.n_theta - m0.design.n_theta  # random effects only (not residual rho)
    if n_params > accounted:
        added.append(
            f"{n_params - accounted} other variance parameter(s) (variances or a correlation "
            "that an identity or exchangeable structure tied together), inside their range"
        )
    if len(unknown) > 1 or (n_boundary > 1 and not unknown):
        unknown = ["several terms differ"]
    return VarianceDifference(n_params, n_boundary, unknown[0] if unknown else "", tuple(added))


def _classify(m0: FitResult, m1: FitResult) -> tuple[str, int | None]:
    """``("mixture", k)``, ``("chi2", None)``, or why no closed form applies and None."""
    diff = variance_difference(m0, m1)
    if diff.same:
        raise ComparisonError("the two models have the same random effects: nothing to test")
    if diff.n_boundary == 0:
        return "chi2", None
    if diff.n_boundary == 1 and not diff.unknown:
        return "mixture", diff.n_params
    return diff.unknown or "several variances are added", None


def lr_statistic(m0: FitResult, m1: FitResult) -> tuple[float, str]:
    """``2 (loglik1 - loglik0)``, set to 0 when negative, with a note when that is not round-off.

    A larger model whose likelihood is below the smaller one's did not reach its optimum; the note
    says so (and a `ConvergenceWarning` is emitted) rather than clamping in silence.
    """
    lr = 2.0 * (m1.loglik - m0.loglik)
    if lr >= 0.0:
        return lr, ""
    if lr > -LR_ROUNDOFF:
        return 0.0, ""
    note = (
        f"Note: the larger model's log likelihood ({m1.loglik:.6g}) is below the smaller one's "
        f"({m0.loglik:.6g}): LR = {lr:.4g} < 0, which cannot happen at the larger model's optimum, "
        f"so it did not reach it (its optimizer {'did' if m1.converged else 'did not'} certify "
        "its end point). The statistic is set to 0 (p = 1); refit the larger model, e.g. from "
        "the smaller one's estimates, before reading this test."
    )
    warnings.warn(note, ConvergenceWarning, stacklevel=3)
    return 0.0, note


def _join(reason: str, note: str) -> str:
    return f"{reason}. {note}" if note else reason


def mixture_p(lr: float, k: int) -> float:
    """P-value of ``lr`` under ``0.5 chi2(k - 1) + 0.5 chi2(k)`` (chi2(0): a point mass at 0)."""
    low = float(stats.chi2.sf(lr, k - 1)) if k > 1 else float(lr <= 0.0)
    return 0.5 * low + 0.5 * float(stats.chi2.sf(lr, k))


def mixture_reason(k: int) -> str:
    """Why ``0.5 chi2(k - 1) + 0.5 chi2(k)``, in words."""
    if k == 1:
        return (
            "one variance component tested at zero, on the edge of its range: a 50:50 mixture "
            "of chi2(0) and chi2(1) (Self and Liang 1987)"
        )
    return (
        f"one variance tested at zero, on the edge of its range, and {k - 1} parameter(s) inside "
        "theirs (e.g. a random slope's covariances, fixed effects): near H0 the alternative is a "
        f"half-space, so the statistic follows a 50:50 mixture of chi2({k - 1}) and chi2({k}) "
        "(Self and Liang 1987; Stram and Lee 1994)"
    )


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
    if m0.design.residuals is not None or m1.design.residuals is not None:
        raise ComparisonError(
            "vctest compares random effects with independent residuals; for models with a "
            "residual structure use tiers.inference.lrtest.lrtest (chi2 and boundary mixtures)"
        )
    if len(m0.theta) > len(m1.theta):
        m0, m1 = m1, m0
    kind, q = _classify(m0, m1)
    lr, note = lr_statistic(m0, m1)
    df = len(m1.theta) - len(m0.theta)
    crit = m0.method
    if kind == "mixture" and method != "bootstrap":
        assert q is not None
        test = f"0.5 chi2({q - 1}) + 0.5 chi2({q})"
        reason = _join(mixture_reason(q), note)
        return LRTest(lr, df, mixture_p(lr, q), test, reason, crit, m0.loglik, m1.loglik)
    if kind == "chi2" and method != "bootstrap":
        p = float(stats.chi2.sf(lr, df))
        reason = (
            "no variance is added, only parameters inside their range (a covariance of zero, "
            f"variances an identity structure tied): the usual chi2({df}) reference distribution "
            "applies"
        )
        return LRTest(lr, df, p, f"chi2({df})", _join(reason, note), crit, m0.loglik, m1.loglik)
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
        f"bootstrap on request (the closed form here: {'the mixture' if kind == 'mixture' else 'chi2'})"
        if kind in ("mixture", "chi2")
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
    reason = _join(reason, note)
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
