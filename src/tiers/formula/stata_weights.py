"""Stata's weights and ``vce()`` for ``mixed``: ``[fw=w]``/``[pw=w]``, ``pweight()``, ``pwscale()``.

``mixed`` accepts frequency and sampling weights only: ``[fw=w]`` (a whole-number count of
identical rows) and ``[pw=w]`` after the fixed part, ``pweight(w)`` on a level (the level's
sampling weight, conditional on the level above), ``pwscale(size|effective|gk)`` among the model's
options. Analytic and importance weights (``[aw=]``, ``[iw=]``) are refused by ``mixed`` and by
tiers; lme4's precision weights are `tiers.fit`'s ``weights=`` (CLI ``--weights``).
``vce(oim)`` is the default, ``vce(robust)`` and ``vce(cluster id)`` the sandwich estimator
clustered on the top level.
"""

from __future__ import annotations

import re

from tiers.formula._text import caret, check_name
from tiers.formula.stata_options import Option
from tiers.formula.weighting import PWSCALES, VceSpec, WeightSpec

_WEIGHT = re.compile(r"\[\s*([A-Za-z]+)\s*=\s*([^\]]*)\]")
_KINDS = {"fw": "frequency", "fweight": "frequency", "pw": "sampling", "pweight": "sampling"}


def split_weight(head: str, whole: str, offset: int) -> tuple[str, tuple[str, str] | None]:
    """The fixed part without its ``[xw=column]``, and (kind, column) when there is one."""
    m = _WEIGHT.search(head)
    if m is None:
        return head, None
    word = m.group(1).lower()
    pos = offset + m.start()
    if word in ("aw", "aweight", "iw", "iweight"):
        raise caret(
            whole,
            pos,
            f"Stata's mixed does not take [{word}=]: it allows frequency weights [fw=] and "
            "sampling weights [pw=]; for lme4's precision weights (residual variance sigma^2 / "
            "w) use tiers.fit(..., weights='w') or --weights w",
        )
    if word not in _KINDS:
        raise caret(whole, pos, f"unknown weight type {word!r}: write [fw=column] or [pw=column]")
    column = check_name(m.group(2), whole, offset + m.start(2), "weight variable")
    rest = head[: m.start()] + " " * (m.end() - m.start()) + head[m.end() :]
    if _WEIGHT.search(rest):
        raise caret(whole, offset + _WEIGHT.search(rest).start(), "a second weight: give one")  # type: ignore[union-attr]
    return rest, (_KINDS[word], column)


def weighting(
    observation: tuple[str, str] | None,
    levels: list[tuple[str, Option]],
    pwscale: Option | None,
    whole: str,
) -> WeightSpec | None:
    """The `WeightSpec` of the observation weight, the levels' ``pweight()``/``fweight()``."""
    for name, opt in levels:
        if opt.name == "fweight":
            raise caret(
                whole,
                opt.pos,
                f"frequency weights of a level (fweight() on {name}) are not supported yet by "
                "tiers; expand the data, or give frequency weights of the rows as [fw=]",
            )
    if observation is None and not levels:
        if pwscale is not None:
            raise caret(whole, pwscale.pos, "pwscale() scales sampling weights: give [pw=] too")
        return None
    kind = observation[0] if observation else "sampling"
    if kind == "frequency" and levels:
        raise caret(
            whole, levels[0][1].pos, "[fw=] and pweight() mix frequency and sampling weights"
        )
    scale = "none"
    if pwscale is not None:
        scale = (pwscale.value or "").lower()
        if scale not in PWSCALES[1:]:
            raise caret(
                whole, pwscale.pos, f"pwscale() takes size, effective or gk; got {pwscale.value!r}"
            )
        if kind != "sampling":
            raise caret(whole, pwscale.pos, "pwscale() scales sampling weights ([pw=])")
    return WeightSpec(
        kind,  # type: ignore[arg-type]
        observation[1] if observation else None,
        tuple(
            (name, check_name(opt.value or "", whole, opt.pos, "weight variable"))
            for name, opt in levels
        ),
        scale,  # type: ignore[arg-type]
        True,
    )


def vce(opt: Option | None, whole: str) -> VceSpec | None:
    """Stata's ``vce(oim)``, ``vce(robust)``, ``vce(cluster id)``; anything else refused."""
    if opt is None:
        return None
    words = (opt.value or "").split()
    head = words[0].lower() if words else ""
    if head and "oim".startswith(head) and len(words) == 1:
        return VceSpec("model")
    if head and len(head) >= 1 and "robust".startswith(head) and len(words) == 1:
        return VceSpec("robust")
    if head and len(head) >= 2 and "cluster".startswith(head) and len(words) == 2:
        return VceSpec("robust", check_name(words[1], whole, opt.pos, "cluster variable"))
    raise caret(
        whole,
        opt.pos,
        f"vce({opt.value}) is not supported by tiers; supported: vce(oim) (the default), "
        "vce(robust), vce(cluster clustvar) with clustvar the top level",
    )
