"""Newton steps from a close start: the stopping rules and the result.

`tiers.optimize.minimize.minimize_theta` runs L-BFGS-B to a tight tolerance and then polishes with
Newton steps on a central-difference Hessian: about 20 gradient evaluations for three parameters,
which a crossed design with a dense Schur complement of thousands of columns cannot afford
(InstEval: 19 evaluations at ~45 ms; a MovieLens-sized design: 26 at 2-5 s). From a close start
(the moment estimates of `tiers.engine.moment_start`) Newton's method converges in a few steps;
`tiers.optimize.scoring` takes them in log theta on the engine's average-information Hessian.

It stops when the Newton step is below `STEP_DONE` or would lower the criterion by less than
`DECREASE_DONE` (or `DECREASE_REL` of it, rounding level); that step, from a positive definite
Hessian, is the certificate `minimize_theta` reports (``newton_step``). Anything outside this
regime returns ``ok=False`` and the caller falls back to `minimize_theta` (L-BFGS-B, boundary
probes and the polish): a Hessian that is not positive definite, a step that would leave the box
or end next to a bound (a variance at 0 needs the boundary logic), or no convergence within
`MAX_STEPS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Newton step below which theta is converged (as the polish of `minimize_theta`).
STEP_DONE = 1e-7
#: ... or when the step would lower the criterion by less than this (absolute; lme4's optima of
#: InstEval and of the references sit ~1e-8 above the converged value) ...
DECREASE_DONE = 1e-9
#: ... or than this share of the criterion: ~45 units in the last place, under the rounding of
#: the criterion's own evaluation (sums of thousands of logs and a factorisation). The ratings
#: design's criterion (2.9e6) took a last gradient evaluation (2-3 s) to gain 2.6e-9, 6 ulps.
DECREASE_REL = 1e-14
#: Newton steps before giving up to the general path.
MAX_STEPS = 12
#: A parameter this close to its lower bound (relative to its scale) goes to the general path.
NEAR_BOUND = 1e-3
#: A Newton step no halving of which lowers the criterion is accepted as converged below this
#: (ten times under `tiers.optimize.minimize.STEP_TOL`).
ROUNDING_STEP = 1e-5


@dataclass(frozen=True, slots=True)
class NewtonResult:
    """What Newton's method (`tiers.optimize.scoring.scoring_theta`) reached.

    Attributes
    ----------
    ok : bool
        Converged inside the regime; False: use the general path.
    theta, f, g
        The end point (the last accepted one when not ``ok``), the objective and gradient there.
    step : float
        The last Newton step (the certificate when ``ok``).
    evaluations : int
    """

    ok: bool
    theta: FloatArray
    f: float
    g: FloatArray
    step: float
    evaluations: int
