# lme4 profile intervals of a GLMM (cbpp, logit, Laplace), for tests/test_glmm_profile.py.
# Run: Rscript glmm_profile.R  (writes glmm_profile.json next to this file)
suppressMessages({library(lme4); library(jsonlite)})
ref <- "/work/shared/reference/glmm"
cbpp <- read.csv(file.path(ref, "cbpp.csv"), colClasses = c(herd = "character", period = "character"))
fit <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial,
             control = glmerControl(tolPwrss = 1e-10, optimizer = "bobyqa"))
ci <- confint(fit, method = "profile", level = 0.95)
out <- list(generated_by = "tests/data/glmm/glmm_profile.R", lme4 = as.character(packageVersion("lme4")),
            level = 0.95, names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE, pretty = TRUE), "glmm_profile.json")
