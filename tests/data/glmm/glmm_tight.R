# lme4 GLMM fits with a tight inner (PIRLS) tolerance, for tests/test_glmm_reference.py.
# The shared references (../shared/reference/glmm) use glmer's default tolPwrss = 1e-7, which
# leaves the Laplace deviance at a given (theta, beta) ~5e-4 above its converged value and the
# finite-difference Hessian (standard errors) ~1% off; tolPwrss = 1e-10 removes both.
# Run: Rscript glmm_tight.R  (writes glmm_tight.json next to this file)
suppressMessages({library(lme4); library(jsonlite); library(numDeriv)})
ref <- "../../../../shared/reference/glmm"
if (!dir.exists(ref)) ref <- "/work/shared/reference/glmm"
cbpp <- read.csv(file.path(ref, "cbpp.csv"), colClasses = c(herd = "character", period = "character"))
gt <- read.csv(file.path(ref, "grouseticks.csv"),
               colClasses = c(INDEX = "character", BROOD = "character", LOCATION = "character", YEAR = "character"))
ctrl <- glmerControl(tolPwrss = 1e-10, optimizer = "bobyqa")
# the deviance function compared point by point: PIRLS to 1e-13 (at 1e-10 glmer still stops ~5e-8
# relative short on grouseticks)
ctrl_dev <- glmerControl(tolPwrss = 1e-13)
one <- function(label, formula, data, family, nAGQ = 1) {
  fit <- glmer(formula, data, family = family, nAGQ = nAGQ, control = ctrl)
  dev <- glmer(formula, data, family = family, nAGQ = nAGQ, control = ctrl_dev, devFunOnly = TRUE)
  pars <- c(getME(fit, "theta"), fixef(fit))
  # glmer's devfun warm-starts PIRLS from the last modes and stops on a relative change of the
  # penalized deviance, so right at its own optimum it returns a value ~1e-4 off the converged
  # Laplace deviance; 2% away, after a restart from lme4's start values, PIRLS runs to convergence
  near <- pars * 1.02
  invisible(dev(c(rep(1, length(getME(fit, "theta"))), rep(0, length(fixef(fit))))))
  devfun_near <- dev(near)
  # standard errors from a Richardson-extrapolated Hessian (numDeriv) of the converged devfun:
  # glmer's own (deriv12 on its warm-started devfun) is up to 0.5% off on some models
  nth <- length(getME(fit, "theta"))
  H <- numDeriv::hessian(dev, pars)
  se_tight <- sqrt(diag(2 * solve(H)))[-seq_len(nth)]
  list(label = label, formula = deparse(formula), nAGQ = nAGQ,
       theta = unname(getME(fit, "theta")), theta_names = names(getME(fit, "theta")),
       beta = unname(fixef(fit)), beta_names = names(fixef(fit)),
       std_error = unname(sqrt(diag(as.matrix(vcov(fit))))),
       minus2logLik = -2 * as.numeric(logLik(fit)),
       devfun_at_optimum = dev(pars), near_optimum = unname(near), devfun_near_optimum = devfun_near,
       std_error_hessian = unname(se_tight))
}
out <- list(
  generated_by = "tests/data/glmm/glmm_tight.R", lme4 = as.character(packageVersion("lme4")),
  tolPwrss = 1e-10,
  fits = list(
    one("cbpp_logit_laplace", cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial),
    one("cbpp_probit_laplace", cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
        binomial(link = "probit")),
    one("grouseticks_poisson_laplace", TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
        gt, poisson)))
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE, pretty = TRUE), "glmm_tight.json")
