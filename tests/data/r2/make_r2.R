# Reference R-squared (Nakagawa & Schielzeth 2013; Johnson 2014; Nakagawa, Johnson & Schielzeth
# 2017) from performance::r2_nakagawa and insight::get_variance on the shared reference cases.
# Run from this folder: Rscript make_r2.R   (TIERS_SHARED overrides ../../../../shared)
suppressMessages({
  library(lme4)
  library(performance)
  library(insight)
  library(jsonlite)
})
shared <- Sys.getenv("TIERS_SHARED", "../../../../shared")
fits <- list(
  list(case = "sleepstudy", key = "corr", formula = "Reaction ~ Days + (Days | Subject)"),
  list(case = "sleepstudy", key = "uncorr", formula = "Reaction ~ Days + (Days || Subject)"),
  list(case = "exam", key = "ri", formula = "normexam ~ standLRT + (1 | school)"),
  list(case = "exam", key = "rs", formula = "normexam ~ standLRT + (standLRT | school)"),
  list(case = "hsb82", key = "rs", formula = "mAch ~ meanses * cses + (cses | school)"),
  list(case = "pastes", key = "nested", formula = "strength ~ 1 + (1 | batch/cask)"),
  list(case = "penicillin", key = "crossed", formula = "diameter ~ 1 + (1 | plate) + (1 | sample)")
)
out <- list()
for (f in fits) {
  d <- read.csv(file.path(shared, "reference", paste0(f$case, ".csv")))
  for (reml in c(TRUE, FALSE)) {
    m <- lmer(as.formula(f$formula), data = d, REML = reml)
    r2 <- r2_nakagawa(m)
    v <- get_variance(m)
    # Johnson's (2014) eq. 10 written out: mean over rows of z_i' Sigma z_i, each VarCorr block
    # (lme4 splits (x || g) into one block per effect, which insight 0.19.0 does not add up:
    # easystats/insight#304, performance#428)
    X <- getME(m, "X")
    vr <- sum(sapply(VarCorr(m), function(S) {
      Z <- X[, rownames(S), drop = FALSE]
      mean(rowSums((Z %*% S) * Z))
    }))
    vf <- var(as.vector(X %*% fixef(m)))
    ve <- sigma(m)^2
    name <- paste0(f$case, "_", f$key, "_", if (reml) "REML" else "ML")
    out[[name]] <- list(
      case = f$case, formula = f$formula, method = if (reml) "REML" else "ML",
      r2_marginal = unname(r2$R2_marginal), r2_conditional = unname(r2$R2_conditional),
      var_fixed = v$var.fixed, var_random = v$var.random, var_residual = v$var.residual,
      johnson = list(
        r2_marginal = vf / (vf + vr + ve), r2_conditional = (vf + vr) / (vf + vr + ve),
        var_fixed = vf, var_random = vr, var_residual = ve
      )
    )
  }
}
doc <- list(
  description = paste(
    "performance::r2_nakagawa on lme4 fits of the shared reference cases;",
    "var_fixed is var(X beta) with denominator n - 1, var_random the mean over rows of",
    "z_i' Sigma z_i summed over terms (Johnson 2014), var_residual sigma^2;",
    "johnson: the same written out in R over every VarCorr block (performance 0.10.2 drops",
    "the slope block of (x || g) models: easystats/insight#304)"
  ),
  software = list(
    R = R.version.string, lme4 = as.character(packageVersion("lme4")),
    performance = as.character(packageVersion("performance")),
    insight = as.character(packageVersion("insight"))
  ),
  fits = out
)
writeLines(toJSON(doc, auto_unbox = TRUE, digits = NA, pretty = TRUE), "r2.json")
