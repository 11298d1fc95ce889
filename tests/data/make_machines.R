# Reference for the profile-interval test on nlme's Machines data (tests/test_profile_bounds.py).
# Run: Rscript tests/data/make_machines.R  (R 4.2, lme4 1.1-31, nlme, jsonlite not needed)
library(lme4)
data(Machines, package = "nlme")
d <- as.data.frame(Machines)
d$Worker <- as.character(d$Worker)
d$Machine <- as.character(d$Machine)
d <- d[, c("Worker", "Machine", "score")]
write.csv(d, "machines.csv", row.names = FALSE)
m <- lmer(score ~ Machine + (0 + Machine | Worker), data = d, REML = TRUE)
ci <- confint(m, method = "profile", oldNames = FALSE)
th <- getME(m, "theta")
q <- function(x) sprintf("%.10g", x)
lines <- c(
  "{",
  sprintf('  "lme4_version": "%s",', as.character(packageVersion("lme4"))),
  '  "formula": "score ~ Machine + (0 + Machine | Worker)",',
  sprintf('  "reml_criterion": %s,', q(REMLcrit(m))),
  sprintf('  "theta": [%s],', paste(q(th), collapse = ", ")),
  '  "confint_profile": {',
  paste0(
    sprintf('    "%s": [%s, %s]', rownames(ci), q(ci[, 1]), q(ci[, 2])),
    c(rep(",", nrow(ci) - 1), "")
  ),
  "  }",
  "}"
)
writeLines(lines, "machines.json")
