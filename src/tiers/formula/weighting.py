"""How a model is weighted and how its standard errors are estimated: pure syntax, no data.

Both syntaxes produce the same values. In Stata's, ``[fw=w]``/``[pw=w]`` before the first ``||``
and ``fweight(w)``/``pweight(w)`` on a level, ``pwscale()`` and ``vce()`` among the model's
options; in Python, the keywords of `tiers.fit` (``weights=``, ``weight_type=``, ``pwscale=``,
``vce=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WeightKind = Literal["precision", "frequency", "sampling"]
WEIGHT_KINDS: tuple[str, ...] = ("precision", "frequency", "sampling")
PwScale = Literal["none", "size", "effective", "gk"]
PWSCALES: tuple[str, ...] = ("none", "size", "effective", "gk")
Vce = Literal["model", "robust", "cr2"]
VCES: tuple[str, ...] = ("model", "robust", "cr2")


@dataclass(frozen=True, slots=True)
class WeightSpec:
    """Which columns weight the model, and how.

    Attributes
    ----------
    kind : {"precision", "frequency", "sampling"}
        ``precision``: lme4's ``weights=``, the residual variance of row i is ``sigma^2 / w_i``;
        ``frequency``: row i stands for ``w_i`` identical rows (Stata's ``fweight``);
        ``sampling``: inverse selection probabilities, fitted by pseudo-maximum likelihood
        (Stata's ``pweight``).
    observation : str or None
        The column weighting the observations (level 1), if any.
    levels : tuple of (str, str)
        ``(level, column)`` for the grouping levels that carry weights (sampling weights only).
    pwscale : {"none", "size", "effective", "gk"}
        Scaling of the level-1 sampling weights (Stata's ``pwscale()``); ``none`` uses them as
        given.
    conditional : bool
        Level-1 sampling weights are conditional on the selection of the unit above (Stata's
        convention); False when they are the overall weights (WeMix's default), which tiers
        divides by the weights of the levels above.
    zero_dropped : int
        Rows with a zero precision weight dropped on request before the fit (they carry no
        information); said in the notes.
    """

    kind: WeightKind
    observation: str | None
    levels: tuple[tuple[str, str], ...] = ()
    pwscale: PwScale = "none"
    conditional: bool = True
    zero_dropped: int = 0

    @property
    def columns(self) -> tuple[str, ...]:
        """Every weight column, the observations' first."""
        obs = (self.observation,) if self.observation else ()
        return obs + tuple(col for _, col in self.levels)


@dataclass(frozen=True, slots=True)
class VceSpec:
    """How the standard errors are estimated.

    Attributes
    ----------
    kind : {"model", "robust", "cr2"}
        ``model``: the inverse information of the model (the default); ``robust``: the sandwich
        estimator clustered on the top level (Stata's ``vce(robust)``); ``cr2``: the fixed
        effects' sandwich with the bias-reduced CR2 correction and Satterthwaite df (Bell and
        McCaffrey 2002; Pustejovsky and Tipton 2018).
    cluster : str or None
        The clustering column when named (Stata's ``vce(cluster id)``); it must be the top
        grouping level.
    """

    kind: Vce = "model"
    cluster: str | None = None
