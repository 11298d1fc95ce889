# R's printed summary() of the golden cases with lmerTest loaded: what tests/test_layouts.py
# compares tiers' lme4 layout with, line by line (all but "Data:", which tiers cannot know).
# Run from this folder: Rscript lmertest_summaries.R  (R 4.2.2, lme4 1.1-31, lmerTest 3.1-3,
# as ../../../../shared/reference/README.md lists; the width is R's default, 80).
suppressPackageStartupMessages(library(lmerTest))
options(width = 80)
ref <- Sys.getenv("TIERS_REFERENCE", "../../../../shared/reference")
cases <- list(
  c("pastes", "nested_REML"), c("dyestuff2", "ri_REML"), c("sleepstudy", "corr_REML"),
  c("sleepstudy", "uncorr_REML"), c("penicillin", "crossed_REML"), c("sleepstudy", "corr_ML"),
  c("dyestuff", "ri_ML")
)
for (cs in cases) {
  spec <- jsonlite::fromJSON(file.path(ref, paste0(cs[1], ".json")))$fits[[cs[2]]]
  d <- read.csv(file.path(ref, paste0(cs[1], ".csv")), stringsAsFactors = TRUE)
  for (v in intersect(names(d), "Subject")) d[[v]] <- factor(d[[v]])  # ids stored as numbers
  assign(cs[1], d)
  m <- suppressMessages(do.call(lmer, list(formula = as.formula(spec$formula),
                                           data = as.name(cs[1]),
                                           REML = spec$method == "REML")))
  writeLines(capture.output(print(summary(m))), paste0(cs[1], "_", cs[2], ".txt"))
}
