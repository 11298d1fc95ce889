# References for precision weights (every engine) and CR2 cluster-robust SEs, written to
# weighted_refs.json next to this script. Run from the repository root:
#   Rscript tests/data/weights/make_references.R
# Data: the shared lme4 cases; the weights are a fixed function of the row number i (0-based),
# recomputed the same way by the tests: w = 1 + (i mod 4) / 3. "w_even" (pastes only) is 0.5 / 1.5
# within each cask, so that every cask's weight total is 2.
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite); library(clubSandwich)})
ref <- "../shared/reference"
wfun <- function(n) 1 + ((seq_len(n) - 1) %% 4) / 3

theta_names <- function(fit) names(getME(fit, "theta"))

one_fit <- function(formula, data, reml, weights) {
  data$wt <- data[[weights]]
  fit <- lmerTest::lmer(formula, data = data, REML = reml, weights = wt,
              control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.2, rhoend = 1e-10)))
  th <- getME(fit, "theta")
  dev_at <- as.numeric(fit@devcomp$cmp[if (reml) "REML" else "dev"])
  list(
    formula = deparse(formula), method = if (reml) "REML" else "ML", weights = weights,
    nobs = nobs(fit), theta = unname(th), theta_names = names(th),
    criterion = dev_at,
    beta = unname(fixef(fit)), beta_names = names(fixef(fit)),
    std_error = unname(sqrt(diag(as.matrix(vcov(fit))))),
    sigma = sigma(fit), logLik = as.numeric(logLik(fit)),
    df_satterthwaite = unname(summary(fit)$coefficients[, "df"])
  )
}

cr2 <- function(formula, data, reml, cluster) {
  fit <- lme4::lmer(formula, data = data, REML = reml)
  V <- vcovCR(fit, type = "CR2", cluster = data[[cluster]])
  ct <- coef_test(fit, vcov = V, test = "Satterthwaite")
  V0 <- vcovCR(fit, type = "CR0", cluster = data[[cluster]])
  list(
    formula = deparse(formula), method = if (reml) "REML" else "ML", cluster = cluster,
    theta = unname(getME(fit, "theta")), beta = unname(fixef(fit)),
    beta_names = names(fixef(fit)),
    vcov_cr2 = unname(as.matrix(V)), se_cr2 = ct$SE, df_satterthwaite = ct$df_Satt,
    p_satterthwaite = ct$p_Satt, se_cr0 = unname(sqrt(diag(as.matrix(V0))))
  )
}

pastes <- read.csv(file.path(ref, "pastes.csv"))
pastes$w <- wfun(nrow(pastes))
pastes$w_even <- ifelse(duplicated(pastes$sample), 1.5, 0.5)
exam <- read.csv(file.path(ref, "exam.csv"))
exam$w <- wfun(nrow(exam))
exam$school <- factor(exam$school)
pen <- read.csv(file.path(ref, "penicillin.csv"))
pen$w <- wfun(nrow(pen))
sleep <- read.csv(file.path(ref, "sleepstudy.csv"))
sleep$Subject <- factor(sleep$Subject)

fits <- list()
for (reml in c(TRUE, FALSE)) {
  m <- if (reml) "REML" else "ML"
  fits[[paste0("pastes_w_", m)]] <- one_fit(strength ~ 1 + (1 | batch/cask), pastes, reml, "w")
  fits[[paste0("pastes_w_even_", m)]] <- one_fit(strength ~ 1 + (1 | batch/cask), pastes, reml, "w_even")
  fits[[paste0("exam_w_", m)]] <- one_fit(normexam ~ standLRT + (1 | school), exam, reml, "w")
  fits[[paste0("exam_slope_w_", m)]] <- one_fit(normexam ~ standLRT + (standLRT | school), exam, reml, "w")
  fits[[paste0("penicillin_w_", m)]] <- one_fit(diameter ~ 1 + (1 | plate) + (1 | sample), pen, reml, "w")
}
robust <- list()
for (reml in c(TRUE, FALSE)) {
  m <- if (reml) "REML" else "ML"
  robust[[paste0("sleepstudy_", m)]] <- cr2(Reaction ~ Days + (Days | Subject), sleep, reml, "Subject")
  robust[[paste0("exam_", m)]] <- cr2(normexam ~ standLRT + (1 | school), exam, reml, "school")
}
out <- list(
  weights_rule = "w = 1 + (i mod 4) / 3 for 0-based row i; pastes w_even = 0.5 for the first row of each sample, 1.5 for the second",
  fits = fits, cr2 = robust,
  software = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  clubSandwich = as.character(packageVersion("clubSandwich")),
                  lmerTest = as.character(packageVersion("lmerTest"))),
  generated_by = "tests/data/weights/make_references.R"
)
write_json(out, "tests/data/weights/weighted_refs.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
