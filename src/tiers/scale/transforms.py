"""Stateful transforms on Dask: learned from every partition's complete rows, applied to each.

In memory formulaic learns ``center()``, ``scale()``, ``standardize()`` and ``poly()`` from the rows
of the model frame (the complete rows, after missing values are dropped) and keeps what it learned
in the model spec's ``transform_state``. A Dask fit learns the same state in its first pass and
builds every partition's columns with it, so the design equals the in-memory one:

* pass 1 (`summarise`) evaluates each stateful call on a partition's complete rows with recording
  versions of the transforms (`RECORDERS`), which keep a small summary that combines exactly:
  count, mean and the sum of squared deviations per column for the scaling transforms (the
  pairwise update of Chan, Golub and LeVeque 1979), and for ``poly(x, d)`` the (d + 1)-point
  Gauss rule of the partition's values (Golub and Welsch 1969), which integrates every
  polynomial up to degree 2d + 1 exactly;
* `learn` combines the partitions' summaries into formulaic's state: the mean and scale, or the
  three-term recurrence of ``poly`` (its ``alpha`` and ``norms2``) run on the union of the Gauss
  rules, weighted. That recurrence reads only sums of polynomials of degree at most 2d over the
  rows, which the union of the rules reproduces (Gautschi 2004, section 2.2: the discretised
  Stieltjes procedure);
* pass 2 (`learned_matrix`) builds each partition's columns from a model spec holding that state.

Spline bases (``bs``, ``cr``, ``cs``, ``cc``) place knots at quantiles of the whole data and are
refused, as is ``lag()`` (row order); so is a stateful call inside another one.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.errors import DataError, FormulaError
from tiers.formula.types import Formula

FloatArray = NDArray[np.float64]

#: Stateful transforms learned over the whole data on Dask.
LEARNED = ("center", "scale", "standardize", "poly")
#: Stateful in formulaic but with nothing learned from the data.
STATELESS = ("Q",)


# ------------------------------------------------------------------------------ which calls --


def _stateful_names() -> dict[str, bool]:
    from formulaic.transforms import TRANSFORMS

    return {
        name: bool(getattr(fn, "__is_stateful_transform__", False))
        for name, fn in TRANSFORMS.items()
    }


def _python_factors(rhs: str) -> list[str]:
    plain = [t.strip() for t in rhs.split("+")]
    if all(t in ("0", "1", "-1") or t.isidentifier() for t in plain):
        return []
    from formulaic import Formula as FFormula
    from formulaic.parser.types import Factor

    try:
        terms = list(FFormula(rhs))
    except Exception:  # noqa: BLE001 - the in-memory stage reports what formulaic cannot parse
        return []
    return [
        str(factor.expr)
        for term in terms
        for factor in term.factors
        if factor.eval_method == Factor.EvalMethod.PYTHON
    ]


def rhs_parts(f: Formula) -> list[tuple[str, str]]:
    """Every right-hand side formulaic evaluates for ``f``, with the part it is, for messages."""
    parts = [(f.fixed, "the fixed part")]
    parts += [
        (t.expr, f"the random-effects term ({t.expr} | {t.name})")
        for t in f.random
        if not t.is_intercept_only
    ]
    if f.response_column is None:
        parts.append((f"0 + I({f.response})", "the response"))
    return parts


def stateful_calls(f: Formula) -> tuple[str, ...]:
    """The stateful calls of ``f`` whose state is learned, as formulaic names them.

    Raises
    ------
    DataError
        A spline basis, ``lag()`` or a stateful call nested in another: they cannot be learned
        from per-partition summaries; the message says what is supported.
    """
    from formulaic.utils.code import format_expr

    stateful = _stateful_names()
    found: dict[str, None] = {}
    for rhs, where in rhs_parts(f):
        for code in _python_factors(rhs):
            try:
                tree = ast.parse(code, mode="eval")
            except SyntaxError:  # pragma: no cover - formulaic parsed it
                continue
            for node in ast.walk(tree):
                name = _call_name(node)
                if name is None:
                    continue
                if name == "lag" or (stateful.get(name) and name not in (*LEARNED, *STATELESS)):
                    raise _refused(name, where, f)
                if name in LEARNED:
                    inner = [
                        n for n in ast.walk(node) if n is not node and _call_name(n) in LEARNED
                    ]
                    if inner:
                        raise DataError(
                            f"{_call_name(inner[0])}() inside {name}() in {where} of {f.text!r}: "
                            "on Dask each stateful transform is learned from the data on its own; "
                            "add the inner one as a column of the Dask DataFrame first"
                        )
                    found.setdefault(format_expr(node), None)
    return tuple(found)


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _refused(name: str, where: str, f: Formula) -> DataError:
    why = (
        "depends on the order of the rows"
        if name == "lag"
        else "places its knots at quantiles of the whole data"
    )
    return DataError(
        f"{name}() in {where} of {f.text!r} {why}, which a Dask fit does not learn from its "
        "partitions; add the transformed column to the Dask DataFrame first and use it in the "
        f"formula. Learned over the whole data on Dask: {', '.join(f'{n}()' for n in LEARNED)}; "
        "also supported: columns, C(), I(), Q(), log(), exp(), np.* and interactions"
    )


# ------------------------------------------------------------------------------- summaries --


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations (per column) of a scaling transform's argument.

    ``center``, ``scale`` and ``ddof`` are the call's arguments, as formulaic's ``scale`` takes them.
    """

    n: int
    mean: FloatArray
    m2: FloatArray
    center: Any
    scale: Any
    ddof: float

    @classmethod
    def of(cls, data: Any, center: Any, scale: Any, ddof: float) -> Moments:
        """The moments of ``data``'s rows (per column), with the call's arguments."""
        x = np.asarray(data, dtype=np.float64)
        mean = x.mean(axis=0)
        return cls(x.shape[0], mean, ((x - mean) ** 2).sum(axis=0), center, scale, ddof)

    def combine(self, other: Moments) -> Moments:
        """The union of two sets of rows (Chan, Golub and LeVeque 1979)."""
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Moments(n, mean, m2, self.center, self.scale, self.ddof)

    def state(self) -> dict[str, Any]:
        """Formulaic's state of ``scale(data, center, scale, ddof)`` on all the rows."""
        state: dict[str, Any] = {"ddof": self.ddof}
        if isinstance(self.center, bool):
            state["center"] = self.mean if self.center else None
        else:
            state["center"] = np.array(self.center)
        if isinstance(self.scale, bool) and self.scale:
            c = 0.0 if state["center"] is None else state["center"]
            ss = self.m2 + self.n * (self.mean - c) ** 2  # about c, from the moments about the mean
            state["scale"] = np.sqrt(ss / (self.n - self.ddof))
        elif not isinstance(self.scale, bool):
            state["scale"] = np.array(self.scale)
        else:
            state["scale"] = None
        return state


@dataclass(frozen=True)
class GaussRule:
    """A weighted point set with the first 2 * degree + 2 moments of some rows of ``x``.

    Nodes are kept about ``shift`` (the rows' mean), so a large offset costs no precision.
    """

    degree: int
    n: int
    shift: float
    nodes: FloatArray
    weights: FloatArray

    @classmethod
    def of(cls, x: Any, degree: int) -> GaussRule | None:
        """The (degree + 1)-point rule of ``x``'s non-missing values (None when there are none)."""
        v = np.asarray(x, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]  # formulaic's poly ignores missing values when it learns
        if v.size == 0:
            return None
        shift = float(v.mean())
        u = v - shift
        if pd.unique(u).size <= degree + 1:
            # the values themselves: fewer distinct points than the rule would have
            nodes, counts = np.unique(u, return_counts=True)
            return cls(degree, v.size, shift, nodes, counts.astype(np.float64))
        alpha, norms2 = recurrence(u, np.ones(u.size), degree + 1)
        from scipy.linalg import eigh_tridiagonal

        # Golub and Welsch (1969): nodes are the eigenvalues of the Jacobi matrix, weights the
        # total weight times the squared first components of its eigenvectors
        offdiag = np.sqrt(norms2[1 : degree + 1] / norms2[:degree])
        nodes, vectors = eigh_tridiagonal(alpha, offdiag)
        return cls(degree, v.size, shift, nodes, norms2[0] * vectors[0] ** 2)

    def combine(self, other: GaussRule) -> GaussRule:
        """The union of two rules, about the pooled mean."""
        n = self.n + other.n
        shift = (self.shift * self.n + other.shift * other.n) / n
        nodes = np.concatenate(
            [self.nodes + (self.shift - shift), other.nodes + (other.shift - shift)]
        )
        return GaussRule(
            self.degree, n, shift, nodes, np.concatenate([self.weights, other.weights])
        )

    def state(self) -> dict[str, Any]:
        """Formulaic's state of ``poly(x, degree)`` on all the rows: its alpha and norms2."""
        with np.errstate(all="ignore"):  # fewer distinct values than the degree: as in memory,
            # the basis is not finite and the fit says which term (`_check_finite`)
            alpha, norms2 = recurrence(self.nodes, self.weights, self.degree)
        # the monic polynomials in x - shift are those in x with every alpha moved by shift
        return {
            "alpha": {k: np.float64(alpha[k] + self.shift) for k in range(self.degree)},
            "norms2": {k: np.float64(norms2[k]) for k in range(self.degree + 1)},
        }


def recurrence(x: FloatArray, w: FloatArray, count: int) -> tuple[FloatArray, FloatArray]:
    """The monic orthogonal polynomials' recurrence for the weighted points ``(x, w)``.

    formulaic's ``poly`` recurrence with weights: ``P_0 = 1``,
    ``P_{k+1} = (x - alpha_k) P_k - (norms2_k / norms2_{k-1}) P_{k-1}``, ``norms2_k = sum w P_k^2``
    and ``alpha_k = sum w x P_k^2 / norms2_k``. Returns ``alpha_0 .. alpha_{count-1}`` and
    ``norms2_0 .. norms2_count``.
    """
    alpha = np.empty(count)
    norms2 = np.empty(count + 1)
    prev = np.zeros_like(x)
    cur = np.ones_like(x)
    for k in range(count + 1):
        sq = w * cur**2
        norms2[k] = sq.sum()
        if k == count:
            break
        alpha[k] = (x * sq).sum() / norms2[k]
        nxt = (x - alpha[k]) * cur
        if k:
            nxt -= (norms2[k] / norms2[k - 1]) * prev
        prev, cur = cur, nxt
    return alpha, norms2


Summary = Moments | GaussRule


def combine(a: Summary | None, b: Summary | None) -> Summary | None:
    """Two partitions' summaries of one call as one."""
    if a is None or b is None:
        return a if b is None else b
    return a.combine(b)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- recording --


def _recorders() -> dict[str, Any]:
    """Versions of the learned transforms that keep a summary in their state.

    Each returns what the real transform gives on these rows, so the expressions around it
    evaluate as they do in memory; only the summary is kept.
    """
    from formulaic.transforms import poly, scale
    from formulaic.utils.stateful_transforms import stateful_transform

    def record_scale(data: Any, center: Any, scale_: Any, ddof: float, state: dict) -> Any:
        x = np.asarray(data, dtype=np.float64)
        if x.shape[0]:
            state["summary"] = Moments.of(x, center, scale_, ddof)
        with np.errstate(all="ignore"):  # a partition of one row: its own scale is 0 / 0
            return scale(x, center=center, scale=scale_, ddof=ddof)

    @stateful_transform
    def center_(data: Any, _state: dict = {}) -> Any:  # noqa: B006 - formulaic's signature
        return record_scale(data, True, False, 1, _state)

    @stateful_transform
    def scale__(
        data: Any,
        center: Any = True,
        scale: Any = True,
        ddof: float = 1,
        _state: dict = {},  # noqa: B006
    ) -> Any:
        return record_scale(data, center, scale, ddof, _state)

    @stateful_transform
    def standardize_(
        x: Any,
        center: Any = True,
        rescale: Any = True,
        ddof: float = 0,
        _state: dict = {},  # noqa: B006
    ) -> Any:
        return record_scale(x, center, rescale, ddof, _state)

    @stateful_transform
    def poly_(x: Any, degree: int = 1, raw: bool = False, _state: dict = {}) -> Any:  # noqa: B006
        if not raw:
            rule = GaussRule.of(x, int(degree))
            if rule is not None:
                _state["summary"] = rule
        with np.errstate(all="ignore"):  # a partition of few distinct values
            return poly(x, degree, raw)

    return {"center": center_, "scale": scale__, "standardize": standardize_, "poly": poly_}


def summarise(calls: tuple[str, ...], used: pd.DataFrame) -> dict[str, Summary]:
    """Pass 1: each stateful call's summary on one partition's complete rows."""
    if not calls or len(used) == 0:
        return {}
    from formulaic import model_matrix as fmm

    try:
        spec = fmm("0 + " + " + ".join(calls), used, na_action="ignore", context=_recorders())
    except Exception as exc:
        raise FormulaError(f"cannot evaluate {', '.join(calls)}: {exc}") from None
    return {
        key: state["summary"]
        for key, state in spec.model_spec.transform_state.items()
        if "summary" in state
    }


def learn(calls: tuple[str, ...], summaries: list[dict[str, Summary]]) -> dict[str, Any]:
    """Formulaic's ``transform_state`` for the calls, from every partition's summaries."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for s in summaries for k in s)
    for key in keys:
        total: Summary | None = None
        for s in summaries:
            total = combine(total, s.get(key))
        if total is not None:
            out[key] = total.state()
    for call in calls:
        out.setdefault(call, {})  # poly(x, raw=True), or no complete row: nothing learned
    return out


def learned_matrix(
    rhs: str, data: pd.DataFrame, state: dict[str, Any], *, what: str
) -> tuple[FloatArray, list[str]]:
    """The model matrix of ``rhs`` with the learned state (`tiers.data.frame.model_matrix`'s names)."""
    from formulaic import ModelSpec

    spec = ModelSpec(formula=rhs, na_action="ignore", transform_state=copy.deepcopy(state))
    try:
        mm = spec.get_model_matrix(data)
    except Exception as exc:
        raise FormulaError(f"cannot build the {what} ({rhs!r}): {exc}") from None
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
    return np.asarray(mm, dtype=np.float64), names
