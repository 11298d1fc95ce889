"""`tiers.fit`'s weighting and ``vce`` keywords -> specs, checked at the public edge."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pandas as pd

from tiers.data.frame import as_pandas
from tiers.formula.weighting import PWSCALES, VCES, WEIGHT_KINDS, VceSpec, WeightSpec
from tiers.options import check_option


def weight_spec(
    weights: str | Mapping[str, str] | None,
    weight_type: str | None,
    pwscale: str,
    conditional: bool,
) -> WeightSpec | None:
    """The weighting asked for by ``tiers.fit(weights=, weight_type=, pwscale=, conditional=)``.

    ``weights`` is one column (precision weights unless ``weight_type`` says otherwise) or a
    mapping ``{level: column}`` of sampling weights, where the one key that is not a grouping
    level names the observations' weights (``{"student": "w1", "school": "w2"}``).

    Raises
    ------
    ValueError
        An unknown ``weight_type`` or ``pwscale``, per-level weights that are not sampling weights,
        ``pwscale``/``conditional`` without sampling weights.
    """
    if weight_type is not None:
        check_option(weight_type, WEIGHT_KINDS, "weight_type")
    check_option(pwscale, PWSCALES, "pwscale")
    if not isinstance(conditional, bool):
        raise ValueError(f"conditional must be True or False; got {conditional!r}")
    if weights is None:
        if weight_type is not None or pwscale != "none" or not conditional:
            raise ValueError(
                "weight_type, pwscale and conditional describe weights: give weights= too"
            )
        return None
    if isinstance(weights, str):
        kind = weight_type or "precision"
        spec = WeightSpec(kind, weights, (), pwscale, conditional)  # type: ignore[arg-type]
    elif isinstance(weights, Mapping) and weights:
        if weight_type not in (None, "sampling"):
            raise ValueError(
                f"weights per level are sampling weights; {weight_type} weights are one column: "
                "weights='w'"
            )
        bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError("weights maps level names to column names, both strings")
        spec = WeightSpec("sampling", None, tuple(weights.items()), pwscale, conditional)  # type: ignore[arg-type]
    else:
        raise ValueError(
            "weights must be a column name ('w') or a mapping of levels to columns "
            f"({{'student': 'w1', 'school': 'w2'}}); got {weights!r}"
        )
    if spec.kind != "sampling" and (pwscale != "none" or not conditional):
        raise ValueError("pwscale and conditional apply to sampling weights only")
    return spec


def drop_zero_weights(
    data: Any, spec: WeightSpec | None, drop: bool
) -> tuple[Any, WeightSpec | None]:
    """The data without its zero-precision-weight rows, when asked (``drop_zero_weights=True``).

    Such rows contribute nothing to the likelihood (their residual variance is infinite); they are
    refused unless dropped on request, and the count is said in the notes.
    """
    if not isinstance(drop, bool):
        raise ValueError(f"drop_zero_weights must be True or False; got {drop!r}")
    if not drop:
        return data, spec
    if spec is None or spec.kind != "precision" or spec.observation is None:
        raise ValueError("drop_zero_weights applies to precision weights (weights='w')")
    df = as_pandas(data)
    if spec.observation not in df.columns:
        return data, spec  # the design names the missing column
    zero = pd.to_numeric(df[spec.observation], errors="coerce").to_numpy() == 0
    return df.loc[~zero], dataclasses.replace(spec, zero_dropped=int(zero.sum()))


def vce_option(vce: str) -> VceSpec | None:
    """``vce="model"|"robust"|"cr2"`` as a `VceSpec` (None for the default, the model's)."""
    check_option(vce, VCES, "vce")
    return None if vce == "model" else VceSpec(vce)  # type: ignore[arg-type]
