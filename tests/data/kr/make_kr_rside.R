# Kenward-Roger reference for exchangeable residuals (tests/test_kr_rside.py) from pbkrtest.
#
# Run from the repository root:  Rscript tests/data/kr/make_kr_rside.R
# Writes tests/data/kr/rside_exchangeable.json. Exchangeable residuals within student with a
# random intercept of school only have the covariance of lmer's (1 | school/student) when the
# within-student correlation is positive: both are linear in their covariances (student variance
# = the exchangeable covariance), so KR (pbkrtest, R_ij = 0) is the same for both. The lmer fit
# on ../rside/rside_sim.csv, by REML; per fixed effect the adjusted SE (vcovAdj) and Lb_ddf's df,
# and KRmodcomp's F test of x and wave.
suppressPackageStartupMessages({
  library(lme4)
  library(pbkrtest)
  library(jsonlite)
})
d <- read.csv("tests/data/rside/rside_sim.csv", stringsAsFactors = FALSE)
fit <- lmer(y ~ x + wave + (1 | school/student), data = d, REML = TRUE)
V0 <- as.matrix(vcov(fit))
VA <- pbkrtest::vcovAdj(fit)  # keeps the P and W attributes Lb_ddf reads
beta <- fixef(fit)
fe <- lapply(seq_along(beta), function(j) {
  L <- matrix(0, 1, length(beta)); L[1, j] <- 1
  list(name = names(beta)[j], estimate = unname(beta[j]), std_error = sqrt(V0[j, j]),
       std_error_kr = sqrt(as.matrix(VA)[j, j]), df_kr = pbkrtest::Lb_ddf(L, V0, VA))
})
L <- matrix(0, 2, length(beta), dimnames = list(NULL, names(beta)))
L[1, "x"] <- 1; L[2, "wave"] <- 1
k <- KRmodcomp(fit, L)$stats
vc <- as.data.frame(VarCorr(fit))
out <- list(
  label = "exchangeable_as_lmer", formula = "y ~ x + wave + (1 | school/student)",
  csv = "rside_sim.csv", method = "REML", nobs = nobs(fit), sigma = sigma(fit),
  random_effects = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], vcov = vc$vcov[i])),
  fixed_effects = fe,
  vcov_adj = unname(lapply(seq_len(nrow(VA)), function(i) unname(as.matrix(VA)[i, ]))),
  kr_test = list(name = "x, wave", F = k$Fstat, NumDF = k$ndf, DenDF = k$ddf,
                 F_scaling = k$F.scaling, p_value = k$p.value),
  software = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  pbkrtest = as.character(packageVersion("pbkrtest"))),
  generated_by = "tests/data/kr/make_kr_rside.R")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           "tests/data/kr/rside_exchangeable.json")
