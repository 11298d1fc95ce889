# Residuals of glmer fits (deviance, Pearson, response) and the fits' parameters, for
# tests/test_glmm_plots.py: cbpp (binomial logit, successes/trials) and a 0/1 and a count outcome
# of glmm_structures.csv. Run: Rscript glmm_residuals.R  (writes glmm_residuals.json)
suppressMessages({library(lme4); library(jsonlite)})
ref <- "/work/shared/reference/glmm"
cbpp <- read.csv(file.path(ref, "cbpp.csv"), colClasses = c(herd = "character", period = "character"))
d <- read.csv("glmm_structures.csv", colClasses = c(subj = "character", item = "character"))
ctrl <- glmerControl(tolPwrss = 1e-10, optimizer = "bobyqa")
one <- function(label, formula, data, family) {
  fit <- glmer(formula, data, family = family, control = ctrl)
  list(label = label, theta = unname(getME(fit, "theta")), beta = unname(fixef(fit)),
       deviance = unname(residuals(fit, type = "deviance")),
       pearson = unname(residuals(fit, type = "pearson")),
       response = unname(residuals(fit, type = "response")),
       fitted = unname(fitted(fit)))
}
out <- list(
  generated_by = "tests/data/glmm/glmm_residuals.R", lme4 = as.character(packageVersion("lme4")),
  R = R.version.string,
  fits = list(
    one("cbpp", cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial),
    one("binary", y ~ x + (1 | subj), d, binomial),
    one("count", count ~ x + (1 | subj) + (1 | item), d, poisson)))
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE, pretty = TRUE), "glmm_residuals.json")
