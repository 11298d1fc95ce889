# Reference fits of residual structures by nlme (lme), REML and ML, for tests/test_rside.py.
# Writes rside_sim.csv (simulated panel: schools > students > waves with gaps) and rside_sim.json.
# Run from this folder: Rscript make_rside.R
suppressMessages({library(nlme); library(jsonlite)})
set.seed(20261204)
S <- 30; J <- 6; Tm <- 5
rows <- list()
for (s in 1:S) {
  u <- rnorm(1, 0, 2)
  for (j in 1:J) {
    v <- rnorm(1, 0, 1.5)
    keep <- sort(sample(1:Tm, sample(3:5, 1)))         # waves observed: gaps
    mode <- sample(c("a", "b", "c"), length(keep), replace = TRUE)
    sdm <- c(a = 1, b = 1.6, c = 0.7)[mode]
    e <- numeric(Tm); e[1] <- rnorm(1)
    for (t in 2:Tm) e[t] <- 0.55 * e[t - 1] + sqrt(1 - 0.55^2) * rnorm(1)
    x <- rnorm(length(keep))
    y <- 1 + 0.5 * x + 0.3 * keep + u + v + 2 * sdm * e[keep]
    rows[[length(rows) + 1]] <- data.frame(
      school = sprintf("s%02d", s), student = sprintf("p%d", j), wave = keep,
      months = 6 * keep + round(runif(length(keep), -1, 1), 2), mode = mode, x = round(x, 6),
      y = round(y, 6))
  }
}
d <- do.call(rbind, rows)
write.csv(d, "rside_sim.csv", row.names = FALSE, quote = FALSE)
d <- read.csv("rside_sim.csv")
d$mode <- factor(d$mode)

one <- function(label, fit, words, struct, call) {
  fe <- summary(fit)$tTable
  re <- fit$modelStruct$reStruct  # relative variances, outermost level first
  sds <- unname(sapply(rev(names(re)), function(g) fit$sigma * sqrt(as.matrix(re[[g]])[1, 1])))
  ms <- fit$modelStruct
  cor <- if (!is.null(ms$corStruct)) as.list(coef(ms$corStruct, unconstrained = FALSE)) else NULL
  vf <- if (!is.null(ms$varStruct)) as.list(coef(ms$varStruct, unconstrained = FALSE)) else NULL
  iv <- tryCatch(intervals(fit, which = "var-cov"), error = function(e) NULL)
  ci <- function(part) if (is.null(iv) || is.null(iv[[part]])) NULL else
    lapply(seq_len(nrow(iv[[part]])), function(i) list(
      name = rownames(iv[[part]])[i], lower = unname(iv[[part]][i, "lower"]),
      estimate = unname(iv[[part]][i, "est."]), upper = unname(iv[[part]][i, "upper"])))
  list(label = label, call = call,
       residual_structure = words, structure = struct,
       method = fit$method,
       fixed_effects = lapply(seq_len(nrow(fe)), function(i) list(
         name = rownames(fe)[i], estimate = unname(fe[i, "Value"]),
         std_error = unname(fe[i, "Std.Error"]))),
       random_sd_names = rev(names(re)), random_sd = sds, residual_sd = fit$sigma,
       correlation_parameters = cor, variance_function_parameters = vf,
       intervals_correlation = ci("corStruct"), intervals_variance_function = ci("varStruct"),
       intervals_sigma = if (is.null(iv)) NULL else as.list(iv$sigma),
       logLik = as.numeric(logLik(fit)), df = attr(logLik(fit), "df"))
}
ctl <- lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, tolerance = 1e-10,
                  msTol = 1e-12, opt = "nlminb")
cases <- list(
  ar1_gaps = list(random = ~ 1 | school/student, cor = corAR1(form = ~ wave | school/student),
                  w = NULL, fixed = y ~ x + wave, words = "AR(1) in wave within student (gaps)",
                  struct = list(kind = "ar1", time = "wave")),
  car1_gaps = list(random = ~ 1 | school/student, cor = corCAR1(form = ~ months | school/student),
                   w = NULL, fixed = y ~ x + wave, words = "CAR(1) in months within student",
                   struct = list(kind = "car1", time = "months")),
  toeplitz2 = list(random = ~ 1 | school/student,
                   cor = corARMA(form = ~ wave | school/student, p = 0, q = 2), w = NULL,
                   fixed = y ~ x + wave,
                   words = "Toeplitz of order 2 in wave within student, as an MA(2) (gaps)",
                   struct = list(kind = "toeplitz", time = "wave", order = 2)),
  varident = list(random = ~ 1 | school/student, cor = NULL, w = varIdent(form = ~ 1 | mode),
                  fixed = y ~ x + wave, words = "residual SD by mode",
                  struct = list(kind = "independent", by = "mode")),
  ar1_varident = list(random = ~ 1 | school/student, cor = corAR1(form = ~ wave | school/student),
                      w = varIdent(form = ~ 1 | mode), fixed = y ~ x + wave,
                      words = "AR(1) in wave within student, SD by mode",
                      struct = list(kind = "ar1", time = "wave", by = "mode")),
  exchangeable = list(random = ~ 1 | school, cor = corCompSymm(form = ~ 1 | school/student),
                      w = NULL, fixed = y ~ x + wave,
                      words = "exchangeable within student (random intercept of school only)",
                      struct = list(kind = "exchangeable", group = "student")),
  exchangeable_slope = list(random = list(school = ~ 1, student = ~ 0 + wave),
                            cor = corCompSymm(form = ~ 1 | school/student), w = NULL,
                            fixed = y ~ x + wave,
                            words = "exchangeable within student, random slope of wave on student",
                            struct = list(kind = "exchangeable")),
  unstructured = list(random = ~ 1 | school, cor = corSymm(form = ~ wave | school/student),
                      w = varIdent(form = ~ 1 | wave), fixed = y ~ x,
                      words = "unstructured over wave within student (random intercept of school)",
                      struct = list(kind = "unstructured", time = "wave", group = "student"))
)
fits <- list()
for (nm in names(cases)) {
  cs <- cases[[nm]]
  for (m in c("REML", "ML")) {
    args <- list(fixed = cs$fixed, random = cs$random, data = d, method = m, control = ctl)
    if (!is.null(cs$cor)) args$correlation <- cs$cor
    if (!is.null(cs$w)) args$weights <- cs$w
    fit <- do.call(lme, args)
    lab <- paste0(nm, "_", m)
    dep <- function(x) if (is.null(x)) "NULL" else paste(deparse(x, width.cutoff = 500), collapse = " ")
    call <- sprintf("lme(%s, random = %s, correlation = %s, weights = %s, method = \"%s\")",
                    dep(cs$fixed), dep(cs$random), dep(cs$cor), dep(cs$w), m)
    fits[[lab]] <- one(lab, fit, cs$words, cs$struct, call)
  }
}
# Ovary (the shared reference's data): intervals for phi, for the Wald interval test
ov <- read.csv("../../../../shared/reference/rside/ovary_ar1.csv")
for (m in c("REML", "ML")) {
  fit <- lme(follicles ~ sin2pi + cos2pi, random = ~ 1 | Mare, data = ov, method = m,
             correlation = corAR1(form = ~ obs | Mare), control = ctl)
  lab <- paste0("ovary_ar1_", m)
  fits[[lab]] <- one(lab, fit, "AR(1) in obs within Mare", list(kind = "ar1", time = "obs"),
                     "lme(follicles ~ sin2pi + cos2pi, random = ~1 | Mare, correlation = corAR1(form = ~obs | Mare))")
}
out <- list(case = "rside_sim", csv = "rside_sim.csv", nrow = nrow(d), fits = fits,
            software = list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
                            jsonlite = as.character(packageVersion("jsonlite"))),
            generated_by = "tests/data/rside/make_rside.R")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "rside_sim.json")
