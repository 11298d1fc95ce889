# Reference margins from emmeans on lme4 fits: predictive margins at given values, average
# marginal effects (emtrends) and contrasts of factor levels with the first, each with normal
# ("asymptotic") and Satterthwaite df. Every fixed part here is linear in the covariates that are
# averaged over, so emmeans' reference grid (covariates at their means) gives the same numbers as
# averaging predictions over the data (Stata's margins).
# Run from this folder: Rscript make_margins.R   (TIERS_SHARED overrides ../../../../shared)
suppressMessages({
  library(lme4)
  library(lmerTest)
  library(emmeans)
  library(jsonlite)
})
emm_options(lmerTest.limit = 10000)  # hsb82 has 7,185 rows; the default 3,000 turns df off
shared <- Sys.getenv("TIERS_SHARED", "../../../../shared")
rows <- function(s, value_col) {
  s <- as.data.frame(s)
  ci <- grep("lower|asymp.LCL", names(s), value = TRUE)
  cu <- grep("upper|asymp.UCL", names(s), value = TRUE)
  est <- if ("emmean" %in% names(s)) "emmean" else if ("estimate" %in% names(s)) "estimate" else
    grep("\\.trend$", names(s), value = TRUE)
  lapply(seq_len(nrow(s)), function(i) list(
    value = as.character(s[i, value_col]), estimate = s[i, est], std_error = s[i, "SE"],
    df = if (is.finite(s[i, "df"])) s[i, "df"] else "Inf", conf_low = s[i, ci], conf_high = s[i, cu]
  ))
}
out <- list()
hsb <- read.csv(file.path(shared, "reference", "hsb82.csv"))
m <- lmer(mAch ~ meanses * cses + (cses | school), data = hsb, REML = TRUE)
mach <- read.csv("../machines.csv")
mm <- lmer(score ~ Machine + (1 | Worker), data = mach, REML = TRUE)
for (ddf in c("asymptotic", "satterthwaite")) {
  key <- if (ddf == "asymptotic") "normal" else "satterthwaite"
  out[[paste0("hsb82_cses_at_", key)]] <- list(
    case = "hsb82", formula = "mAch ~ meanses * cses + (cses | school)", term = "cses",
    kind = "predictive", at = c(-1, 0, 1), ddf = key,
    rows = rows(summary(emmeans(m, ~cses, at = list(cses = c(-1, 0, 1)), lmer.df = ddf),
                        infer = TRUE), "cses"))
  out[[paste0("hsb82_meanses_at_", key)]] <- list(
    case = "hsb82", formula = "mAch ~ meanses * cses + (cses | school)", term = "meanses",
    kind = "predictive", at = c(-0.5, 0.5), ddf = key,
    rows = rows(summary(emmeans(m, ~meanses, at = list(meanses = c(-0.5, 0.5)), lmer.df = ddf),
                        infer = TRUE), "meanses"))
  out[[paste0("hsb82_cses_dydx_", key)]] <- list(
    case = "hsb82", formula = "mAch ~ meanses * cses + (cses | school)", term = "cses",
    kind = "dydx", ddf = key,
    rows = rows(summary(emtrends(m, ~1, var = "cses", lmer.df = ddf), infer = TRUE), "1"))
  out[[paste0("machines_machine_", key)]] <- list(
    case = "machines", formula = "score ~ Machine + (1 | Worker)", term = "Machine",
    kind = "predictive", ddf = key,
    rows = rows(summary(emmeans(mm, ~Machine, lmer.df = ddf), infer = TRUE), "Machine"))
  out[[paste0("machines_machine_dydx_", key)]] <- list(
    case = "machines", formula = "score ~ Machine + (1 | Worker)", term = "Machine",
    kind = "dydx", ddf = key,
    rows = rows(summary(contrast(emmeans(mm, ~Machine, lmer.df = ddf), "trt.vs.ctrl",
                                 adjust = "none"), infer = TRUE), "contrast"))
}
doc <- list(
  description = "emmeans on lme4 fits (REML); df 'Inf' means normal (asymptotic) inference",
  software = list(
    R = R.version.string, lme4 = as.character(packageVersion("lme4")),
    emmeans = as.character(packageVersion("emmeans")),
    lmerTest = as.character(packageVersion("lmerTest"))
  ),
  margins = out
)
writeLines(toJSON(doc, auto_unbox = TRUE, digits = NA, pretty = TRUE), "margins.json")
