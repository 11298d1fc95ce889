"""The analytic gradient of the Laplace deviance for nested random intercepts, canonical links.

With ``D(theta, beta) = sum d_i + |u|^2 + log det A + const`` at the conditional modes ``u``:

* the penalized deviance ``P = sum d_i + |u|^2`` is stationary in ``u`` (envelope theorem): its
  derivative is ``-2 s' d eta / dp`` at fixed ``u`` (``s`` the score in ``eta``);
* ``log det A`` (``A = Lambda' Z' W Z Lambda + I``) changes through ``Lambda`` directly and through
  the weights ``W(eta)``, whose ``eta`` moves with the parameter and with the modes:
  ``d u / dp = A^{-1} dF/dp`` for the mode equation ``F = Lambda' Z' s - u = 0`` (for a canonical
  link ``-dF/du = A``, so the factor PIRLS left behind serves). The trace
  ``tr(A^{-1} dA)`` needs only ``A^{-1}`` over each innermost group's chain of ancestors, which the
  tree gives by Takahashi's recursion (`tiers.engine.glmm_tree.TreeSystem.chain_theta`).

Cost: one pass over the groups for the chains, and (levels + fixed effects) solves and passes
over the rows. Madsen & Thyregod (2011, ch. 5) and Bates et al. (2015, sec. 5) give the pieces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm, Modes

FloatArray = NDArray[np.float64]

#: Links whose observed and expected information agree (-ds/deta = W).
CANONICAL = {("binomial", "logit"), ("poisson", "log")}


def has_gradient(problem: Glmm) -> bool:
    """The analytic gradient applies: nested intercepts (the tree) and a canonical link."""
    fam = problem.family
    return isinstance(problem.system, TreeSystem) and (fam.name, fam.link) in CANONICAL


def laplace_gradient(problem: Glmm, modes: Modes) -> FloatArray:
    """The gradient of the Laplace deviance over ``(theta, beta)`` at the modes just computed.

    ``modes`` must be the last `Glmm.modes` result (the system still holds its factor).
    """
    sysm = problem.system
    assert isinstance(sysm, TreeSystem)
    fam = problem.family
    mu, u = modes.mu, modes.u
    wt = problem.wt
    if fam.name == "binomial":
        W = wt * mu * (1.0 - mu)
        dW = W * (1.0 - 2.0 * mu)
        s = wt * (problem.y - mu)
    else:
        W = mu
        dW = mu
        s = problem.y - mu
    K = sysm.K
    leaf = sysm.leaf
    # (innermost groups, K): A^{-1} over the chain times theta, and each row's leverage
    # z' Lambda A^{-1} Lambda' z
    St, lev = sysm.chain_theta()
    h = lev[leaf]
    wh = dW * h
    # adjoint: wh' Z Lambda A^{-1} dF = a' dF with a = A^{-1} Lambda' Z' wh, one solve for all
    a = sysm.solve(sysm.zlt(wh))
    wza = W * sysm.zl(a)
    # every theta_k term is a sum over rows of c_i u_k[group of i]: one aggregation per level
    c_sums = sysm.sums(-2.0 * s + wh - wza)
    s_sums = sysm.sums(s)
    direct = 2.0 * (np.bincount(leaf, W, minlength=St.shape[0]) @ St)
    grad = np.empty(K + problem.p)
    for k in range(K):
        lo, hi = int(sysm.offsets[k]), int(sysm.offsets[k + 1])
        grad[k] = float(u[lo:hi] @ c_sums[k]) + direct[k] + float(a[lo:hi] @ s_sums[k])
    X = problem.X
    grad[K:] = -2.0 * (s @ X) + wh @ X - wza @ X
    return grad
