# lme4 GLMM fits with a tight inner (PIRLS) tolerance, for tests/test_glmm_reference.py.
# The shared references (../shared/reference/glmm) use glmer's default tolPwrss = 1e-7, which
# leaves the Laplace deviance at a given (theta, beta) ~5e-4 above its converged value and the
# finite-difference Hessian (standard errors) ~1% off; tolPwrss = 1e-10 removes both.
# Run: Rscript glmm_tight.R  (writes glmm_tight.json next to this file)
suppressMessages({library(lme4); library(jsonlite)})
ref <- "../../../../shared/reference/glmm"
if (!dir.exists(ref)) ref <- "/work/shared/reference/glmm"
cbpp <- read.csv(file.path(ref, "cbpp.csv"), colClasses = c(herd = "character", period = "character"))
gt <- read.csv(file.path(ref, "grouseticks.csv"),
               colClasses = c(INDEX = "character", BROOD = "character", LOCATION = "character", YEAR = "character"))
ctrl <- glmerControl(tolPwrss = 1e-10, optimizer = "bobyqa")
one <- function(label, formula, data, family, nAGQ = 1) {
  fit <- glmer(formula, data, family = family, nAGQ = nAGQ, control = ctrl)
  dev <- glmer(formula, data, family = family, nAGQ = nAGQ, control = ctrl, devFunOnly = TRUE)
  pars <- c(getME(fit, "theta"), fixef(fit))
  list(label = label, formula = deparse(formula), nAGQ = nAGQ,
       theta = unname(getME(fit, "theta")), theta_names = names(getME(fit, "theta")),
       beta = unname(fixef(fit)), beta_names = names(fixef(fit)),
       std_error = unname(sqrt(diag(as.matrix(vcov(fit))))),
       minus2logLik = -2 * as.numeric(logLik(fit)),
       devfun_at_optimum = dev(pars))
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
