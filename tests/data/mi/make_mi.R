# Multiple imputation reference: exam (mlmRev, shared reference case) with 20% of standLRT deleted
# at random, imputed m = 5 times by mice (predictive mean matching from normexam), each imputed
# data set fitted by lme4 and the fits pooled by mice::pool (Rubin's rules, Barnard-Rubin df).
# The imputation model ignores the schools: the point is the pooling arithmetic, not the imputation.
# Run from this folder: Rscript make_mi.R   (TIERS_SHARED overrides ../../../../shared)
suppressMessages({
  library(lme4)
  library(mice)
  library(broom.mixed)
  library(jsonlite)
})
shared <- Sys.getenv("TIERS_SHARED", "../../../../shared")
d <- read.csv(file.path(shared, "reference", "exam.csv"))[, c("school", "normexam", "standLRT")]
set.seed(20261204)
d$standLRT[sample(nrow(d), round(0.2 * nrow(d)))] <- NA
write.csv(d, "exam_missing.csv", row.names = FALSE, na = "")
pred <- make.predictorMatrix(d)
pred[, "school"] <- 0
imp <- mice(d, m = 5, method = c("", "", "pmm"), predictorMatrix = pred, seed = 1, printFlag = FALSE)
formula <- "normexam ~ standLRT + (standLRT | school)"
per_fit <- list()
for (i in seq_len(imp$m)) {
  di <- complete(imp, i)
  write.csv(di, sprintf("imp_%d.csv", i), row.names = FALSE)
  f <- lmer(as.formula(formula), data = di, REML = TRUE)
  vc <- as.data.frame(VarCorr(f))
  per_fit[[i]] <- list(
    fixef = as.list(fixef(f)),
    std_error = as.list(sqrt(diag(as.matrix(vcov(f))))),
    reml_criterion = REMLcrit(f),
    sdcor = lapply(seq_len(nrow(vc)), function(k) list(
      grp = vc$grp[k], var1 = vc$var1[k], var2 = vc$var2[k], sdcor = vc$sdcor[k]
    ))
  )
}
fits <- with(imp, lmer(normexam ~ standLRT + (standLRT | school), REML = TRUE))
p <- pool(fits)
s <- summary(p, conf.int = TRUE)
pooled <- p$pooled
doc <- list(
  description = paste(
    "mice::pool of lme4 REML fits of", formula, "on 5 mice (pmm) imputations of exam with 20%",
    "of standLRT deleted; pooled: mice's pooled table (ubar, b, t, dfcom, df, riv, lambda, fmi);",
    "summary: with std.error, statistic, p.value and 95% intervals; per_fit: each fit's fixed",
    "effects, their SEs and VarCorr SDs and correlations"
  ),
  software = list(
    R = R.version.string, lme4 = as.character(packageVersion("lme4")),
    mice = as.character(packageVersion("mice")),
    broom.mixed = as.character(packageVersion("broom.mixed"))
  ),
  formula = formula, m = imp$m, nobs = nrow(d),
  pooled = lapply(seq_len(nrow(pooled)), function(k) list(
    term = as.character(pooled$term[k]), estimate = pooled$estimate[k], ubar = pooled$ubar[k],
    b = pooled$b[k], t = pooled$t[k], dfcom = pooled$dfcom[k], df = pooled$df[k],
    riv = pooled$riv[k], lambda = pooled$lambda[k], fmi = pooled$fmi[k]
  )),
  summary = lapply(seq_len(nrow(s)), function(k) list(
    term = as.character(s$term[k]), estimate = s$estimate[k], std_error = s$std.error[k],
    statistic = s$statistic[k], df = s$df[k], p_value = s$p.value[k],
    conf_low = s[k, "2.5 %"], conf_high = s[k, "97.5 %"]
  )),
  per_fit = per_fit
)
writeLines(toJSON(doc, auto_unbox = TRUE, digits = NA, pretty = TRUE), "mi.json")
