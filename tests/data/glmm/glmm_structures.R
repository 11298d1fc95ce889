# Crossed and slope GLMMs fitted by lme4's glmer (tolPwrss = 1e-10), for tests/test_glmm_structures.py.
# The data are simulated here once and stored (glmm_structures.csv): numpy/R streams differ.
# Run: Rscript glmm_structures.R  (writes glmm_structures.csv and glmm_structures.json)
suppressMessages({library(lme4); library(jsonlite); library(numDeriv)})
set.seed(20261204)
nsub <- 40; nitem <- 12; per <- 3
d <- expand.grid(subj = sprintf("s%02d", 1:nsub), item = sprintf("i%02d", 1:nitem), rep = 1:per)
d$x <- round(rnorm(nrow(d)), 4)
us <- rnorm(nsub, 0, 0.7); ui <- rnorm(nitem, 0, 0.5); vs <- rnorm(nsub, 0, 0.4)
si <- as.integer(factor(d$subj)); ii <- as.integer(factor(d$item))
eta <- -0.2 + 0.6 * d$x + us[si] + vs[si] * d$x + ui[ii]
d$y <- rbinom(nrow(d), 1, plogis(eta))
d$count <- rpois(nrow(d), exp(0.3 + 0.3 * d$x + us[si] / 2 + ui[ii] / 2))
d <- d[, c("y", "count", "x", "subj", "item")]
write.csv(d, "glmm_structures.csv", row.names = FALSE, quote = FALSE)
d <- read.csv("glmm_structures.csv", colClasses = c(subj = "character", item = "character"))
ctrl <- glmerControl(tolPwrss = 1e-10, optimizer = "bobyqa")
# the deviance function compared point by point: PIRLS to 1e-13 (at 1e-10 glmer still stops ~5e-8
# relative short on grouseticks)
ctrl_dev <- glmerControl(tolPwrss = 1e-13)
one <- function(label, formula, family) {
  fit <- glmer(formula, d, family = family, control = ctrl)
  dev <- glmer(formula, d, family = family, control = ctrl_dev, devFunOnly = TRUE)
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
  list(label = label, formula = deparse(formula),
       theta = unname(getME(fit, "theta")), theta_names = names(getME(fit, "theta")),
       beta = unname(fixef(fit)), beta_names = names(fixef(fit)),
       std_error = unname(sqrt(diag(as.matrix(vcov(fit))))),
       minus2logLik = -2 * as.numeric(logLik(fit)), devfun_at_optimum = dev(pars),
       near_optimum = unname(near), devfun_near_optimum = devfun_near,
       std_error_hessian = unname(se_tight))
}
out <- list(
  generated_by = "tests/data/glmm/glmm_structures.R", lme4 = as.character(packageVersion("lme4")),
  tolPwrss = 1e-10,
  fits = list(
    one("crossed_logit", y ~ x + (1 | subj) + (1 | item), binomial),
    one("slopes_logit", y ~ x + (x | subj), binomial),
    one("crossed_slopes_poisson", count ~ x + (x | subj) + (1 | item), poisson)))
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE, pretty = TRUE), "glmm_structures.json")
