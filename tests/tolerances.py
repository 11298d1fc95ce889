"""Tolerances for comparisons with lme4 (../shared/STYLE.md section 5), each with its reason."""

#: Deviance at lme4's own theta: the same closed-form function of theta evaluated in double
#: precision by two implementations; only rounding separates them.
DEVIANCE_AT_THETA_RTOL = 1e-8
#: Our optimum may be lower than lme4's (BOBYQA stops on xtol), never higher by more than this.
OPTIMUM_NOT_WORSE_RTOL = 1e-6
#: ... and not lower by more than this (a much lower optimum would mean a different objective).
OPTIMUM_WITHIN_RTOL = 1e-4
#: theta: lme4's optimizer stops at xtol_rel 1e-7 on a surface whose flat directions let theta
#: move ~1e-5 for a 1e-10 change in the deviance.
THETA_ATOL = 1e-4
#: Fixed effects are a smooth function of theta (GLS): theta differences of 1e-5 move them ~1e-6.
BETA_RTOL = 1e-5
#: ... and for a coefficient near zero, as a fraction of its SE (lme4's optimum is ~1e-5 SE away).
BETA_ATOL_SE = 1e-4
#: Standard errors and SDs depend on theta and sigma to first order.
SE_RTOL = 1e-4
#: Closed-form panel estimators: same formulas, double precision.
CLOSED_FORM_RTOL = 1e-8
#: R-squared and its variance parts are smooth functions of theta, sigma and beta, which agree with
#: lme4's to ~1e-5 relative: the same first-order dependence as the standard errors.
R2_RTOL = 1e-4
#: Profile zeta at a given parameter value: lme4's profile stops its inner BOBYQA at a deviance
#: ~1e-6 above the minimum, so |zeta| (= sqrt of the deviance difference) differs by ~1e-6 / |zeta|
#: near the middle and up to ~1e-3 out at |zeta| ~ 3-4, where its steps stop short (measured 8e-4).
ZETA_ATOL = 1e-3
#: Our zeta grid against a cubic spline through lme4's profile points (lme4's own interpSpline):
#: the spline's interpolation error over lme4's ~0.5-zeta spacing (measured <= 4e-4).
ZETA_SPLINE_ATOL = 2e-3
#: A Dask fit against the in-memory fit of the same rows: the same statistics, combined chunk by
#: chunk by the exact co-moment update, differ only by rounding (~1e-15 relative), so the criterion
#: at the optimum agrees to far better than this.
DISTRIBUTED_CRITERION_RTOL = 1e-10
#: ... and the optimiser, fed criteria that agree to rounding, stops at estimates this close
#: (relative to max(1, |value|)), as the issue asks. This needs the polish's last Newton step
#: (`optimize.minimize._polish`): without it the fit stopped anywhere within its 1e-7 certificate,
#: and the same rows in 16 other orders moved theta by up to 1.4e-8; with it, by 3e-10.
DISTRIBUTED_ESTIMATE_TOL = 1e-8

# --- GLMMs (lme4's glmer) ---------------------------------------------------------------------
#: Laplace deviance at lme4's (theta, beta) moved 2% off its optimum, against glmer's devfun with
#: tolPwrss = 1e-10 (tests/data/glmm/*.R): both run PIRLS to convergence and differ by rounding
#: (~1e-11 relative). At lme4's own optimum its warm-started devfun stops PIRLS early (1e-4 off),
#: and glmer's default tolPwrss = 1e-7 leaves 3e-6 anywhere.
GLMM_DEVIANCE_AT_PARAMS_RTOL = 1e-8
#: Adaptive quadrature at lme4's (theta, beta): the same finite sum in double precision.
GLMM_AGQ_AT_PARAMS_RTOL = 1e-9
#: GLMM estimates against glmer with the tight inner tolerance: glmer's BOBYQA stops on xtol, and
#: its PIRLS leaves 1e-9 noise in the deviance, so parameters agree to ~1e-5.
GLMM_PARAM_ATOL = 2e-4
#: Standard errors: ours from second differences (absolute-floor steps 1e-4) against numDeriv's
#: Richardson Hessian of glmer's converged devfun (tests/data/glmm/*.R); both are numerical
#: Hessians of a function computed through an inner iteration, and numDeriv's step shrinks with a
#: parameter near zero (0.007 in crossed_slopes_poisson): they agree to 5e-4 there, 1e-5 elsewhere.
#: (glmer's own vcov, from deriv12 on its warm-started devfun, is up to 0.5% off.)
GLMM_SE_RTOL = 1e-3
#: Kenward-Roger's adjusted SEs and df against pbkrtest: both are smooth functions of theta and
#: sigma evaluated at lme4's optimum, which is ~1e-5 away from ours (observed: SE 4e-5, df 1.2e-5).
KR_SE_RTOL = SE_RTOL
KR_DF_RTOL = 1e-4
#: KR's F statistics (scaled) are ratios of the same quantities (observed 1.5e-6).
KR_F_RTOL = 1e-4
#: The adjustment Phi_A - Phi is small next to Phi (it is a second-order term), so it is compared
#: relative to its own largest entry, where theta's difference is amplified (observed 2e-5).
KR_ADJUSTMENT_RTOL = 1e-3
#: KR's df where they are known in closed form (balanced designs: the ANOVA df), and the blockwise
#: Woodbury products against dense n x n algebra: the same numbers up to rounding.
KR_EXACT_RTOL = 1e-8
