# lme4's profile zeta of the variance parameters of sleepstudy's correlated-slopes model fitted by
# ML: the reference of tests/test_plots.py::test_zeta_matches_lme4_profile.
# Run from the repository root: Rscript tests/data/plots/zeta_sleepstudy.R
suppressMessages(library(lme4))
library(jsonlite)
d <- read.csv("../shared/reference/sleepstudy.csv")
m <- lmer(Reaction ~ Days + (Days | Subject), d, REML = FALSE)
p <- as.data.frame(profile(m, which = "theta_", signames = FALSE))
rows <- lapply(seq_len(nrow(p)), function(i) {
  par <- as.character(p$.par[i])
  list(parameter = par, value = p[i, par], zeta = p$.zeta[i])
})
writeLines(toJSON(list(lme4 = as.character(packageVersion("lme4")), formula = "Reaction ~ Days + (Days | Subject)",
                       method = "ML", rows = rows), auto_unbox = TRUE, digits = NA, pretty = TRUE),
           "tests/data/plots/zeta_sleepstudy.json")
