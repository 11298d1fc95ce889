# Kenward-Roger references for tiers (tests/test_kenward_roger.py) from pbkrtest.
#
# Run from the repository root:  Rscript tests/data/kr/make_kr.R
# Writes tests/data/kr/<case>.json (and oats.csv, the data of nlme's Oats). Every fit is by REML
# (lme4::lmer, default control). Per fixed effect: the unadjusted SE (vcov), the adjusted SE
# (sqrt of the diagonal of pbkrtest::vcovAdj) and pbkrtest::Lb_ddf's df, which is what lmerTest's
# summary(ddf = "Kenward-Roger") prints. Per test (a restriction matrix L, rows named by the
# coefficients): pbkrtest::KRmodcomp's F (scaled), FstatU (unscaled), F.scaling, ndf, ddf, p.
suppressPackageStartupMessages({
  library(lme4)
  library(pbkrtest)
  library(nlme)
  library(jsonlite)
})

out_dir <- "tests/data/kr"
ref <- "../shared/reference"

oats <- as.data.frame(nlme::Oats)
oats_csv <- data.frame(
  yield = oats$yield,
  Block = as.character(oats$Block),
  Variety = c("Golden Rain" = "GoldenRain", Marvellous = "Marvellous",
              Victory = "Victory")[as.character(oats$Variety)],
  N = paste0("N", round(oats$nitro * 10)),
  nitro = oats$nitro
)
write.csv(oats_csv, file.path(out_dir, "oats.csv"), row.names = FALSE, quote = FALSE)

read_case <- function(path, factors) {
  d <- read.csv(path, stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}

# rows dropped to make a balanced design unbalanced (1-based, from the CSV's order)
drop_rows <- function(d, rows) d[-rows, , drop = FALSE]

term_L <- function(fit, cols) {
  nm <- names(fixef(fit))
  L <- matrix(0, length(cols), length(nm), dimnames = list(NULL, nm))
  for (i in seq_along(cols)) L[i, cols[i]] <- 1
  L
}

kr_test <- function(fit, name, L) {
  k <- KRmodcomp(fit, L)
  s <- k$stats
  list(name = name, L = unname(lapply(seq_len(nrow(L)), function(i) unname(L[i, ]))),
       F = s$Fstat, FstatU = s$FstatU, F_scaling = s$F.scaling, NumDF = s$ndf,
       DenDF = s$ddf, p_value = s$p.value)
}

case <- function(label, formula, data, csv, rows_dropped, description, tests = list()) {
  t0 <- proc.time()[["elapsed"]]
  fit <- lmer(as.formula(formula), data = data, REML = TRUE)
  V0 <- as.matrix(vcov(fit))
  VA <- pbkrtest::vcovAdj(fit)
  elapsed <- proc.time()[["elapsed"]] - t0
  beta <- fixef(fit)
  fe <- lapply(seq_along(beta), function(j) {
    L <- matrix(0, 1, length(beta)); L[1, j] <- 1
    ddf <- pbkrtest::Lb_ddf(L, V0, VA)
    se <- sqrt(as.matrix(VA)[j, j])
    t <- unname(beta[j]) / se
    list(name = names(beta)[j], estimate = unname(beta[j]), std_error = sqrt(V0[j, j]),
         std_error_kr = se, df_kr = ddf, t_kr = t, p_value_kr = 2 * pt(abs(t), ddf, lower.tail = FALSE))
  })
  test_out <- lapply(names(tests), function(nm) kr_test(fit, nm, tests[[nm]](fit)))
  vc <- as.data.frame(VarCorr(fit))
  list(
    label = label, formula = formula, method = "REML", csv = csv,
    rows_dropped = rows_dropped, description = description, nobs = nobs(fit),
    REML_criterion = unname(REMLcrit(fit)), theta = unname(getME(fit, "theta")),
    sigma = sigma(fit), isSingular = isSingular(fit),
    random_effects = lapply(seq_len(nrow(vc)), function(i) list(
      grp = vc$grp[i], var1 = vc$var1[i], var2 = vc$var2[i], vcov = vc$vcov[i])),
    fixed_effects = fe,
    vcov = unname(lapply(seq_len(nrow(V0)), function(i) unname(V0[i, ]))),
    vcov_adj = unname(lapply(seq_len(nrow(V0)), function(i) unname(as.matrix(VA)[i, ]))),
    kr_tests = test_out,
    pbkrtest_seconds = elapsed
  )
}

software <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  pbkrtest = as.character(packageVersion("pbkrtest")),
  Matrix = as.character(packageVersion("Matrix")),
  nlme = as.character(packageVersion("nlme")),
  BLAS = extSoftVersion()[["BLAS"]]
)

write_case <- function(name, fits, csv, description) {
  doc <- list(case = name, csv = csv, description = description, fits = fits,
              software = software, generated_utc = format(Sys.time(), tz = "UTC", usetz = TRUE),
              generated_by = "tests/data/kr/make_kr.R")
  writeLines(toJSON(doc, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
             file.path(out_dir, paste0(name, ".json")))
}

# ---- split-plot: nlme's Oats (Yates 1935). Blocks (6) are split into whole plots sown with one
# Variety (3); each whole plot is split into 4 subplots with a nitrogen level N (0, .2, .4, .6 cwt).
oats_d <- read_case(file.path(out_dir, "oats.csv"), c("Block", "Variety", "N"))
oats_f <- "yield ~ Variety * N + (1 | Block/Variety)"
# classical split-plot contrasts (main effects averaged over the other factor, with treatment
# coding): Variety on the whole-plot stratum (df 10), N and Variety:N on the subplot one (df 45)
main_L <- function(fit) {
  nm <- names(fixef(fit))
  L <- matrix(0, 2, length(nm), dimnames = list(NULL, nm))
  for (i in 1:2) {
    v <- c("VarietyMarvellous", "VarietyVictory")[i]
    L[i, v] <- 1
    L[i, grep(paste0("^", v, ":"), nm)] <- 1 / 4
  }
  L
}
nitro_L <- function(fit) {
  nm <- names(fixef(fit))
  L <- matrix(0, 3, length(nm), dimnames = list(NULL, nm))
  for (i in 1:3) {
    n <- c("NN2", "NN4", "NN6")[i]
    L[i, n] <- 1
    L[i, grep(paste0(":", n, "$"), nm)] <- 1 / 3
  }
  L
}
inter_L <- function(fit) term_L(fit, grep(":", names(fixef(fit)), value = TRUE))
oats_tests <- list(Variety_main = main_L, N_main = nitro_L, Variety_N = inter_L,
                   Variety_columns = function(fit) term_L(fit, c("VarietyMarvellous", "VarietyVictory")))
oats_drop <- c(3L, 10L, 22L, 37L, 50L, 51L, 68L)
write_case("oats_splitplot", list(
  balanced = case("balanced", oats_f, oats_d, "oats.csv", integer(0),
                  "balanced split-plot: KR df are the classical ANOVA df", oats_tests),
  unbalanced = case("unbalanced", oats_f, drop_rows(oats_d, oats_drop), "oats.csv", oats_drop,
                    "the same with 7 subplots dropped", oats_tests)
), "oats.csv", "nlme Oats, a split-plot in 6 blocks: Variety on whole plots, nitrogen N on subplots")

# ---- crossed: lme4's Penicillin (every sample on every plate)
pen <- read_case(file.path(ref, "penicillin.csv"), c("plate", "sample"))
pen_f <- "diameter ~ 1 + (1 | plate) + (1 | sample)"
pen_drop <- c(2L, 9L, 30L, 31L, 57L, 80L, 81L, 82L, 100L, 143L)
write_case("penicillin_crossed", list(
  balanced = case("balanced", pen_f, pen, "penicillin.csv", integer(0), "fully crossed"),
  unbalanced = case("unbalanced", pen_f, drop_rows(pen, pen_drop), "penicillin.csv", pen_drop,
                    "crossed with 10 rows dropped")
), "penicillin.csv", "lme4 Penicillin: 24 plates crossed with 6 samples (../shared/reference)")

# ---- nested with correlated slopes: sleepstudy with rows dropped (balanced, KR equals the
# unadjusted inference exactly; rside/sleepstudy_kr.json has that case)
sl <- read_case(file.path(ref, "sleepstudy.csv"), c("Subject"))
sl_drop <- which(seq_len(nrow(sl)) %% 7 == 3)
write_case("sleepstudy_unbalanced", list(
  slopes = case("slopes", "Reaction ~ Days + (Days | Subject)", drop_rows(sl, sl_drop),
                "sleepstudy.csv", sl_drop, "correlated random slopes, every 7th row dropped",
                list(Days = function(fit) term_L(fit, "Days"))),
  independent = case("independent", "Reaction ~ Days + (Days || Subject)", drop_rows(sl, sl_drop),
                     "sleepstudy.csv", sl_drop, "uncorrelated random slopes, same rows")
), "sleepstudy.csv", "lme4 sleepstudy with every 7th row (row %% 7 == 3) dropped")

# ---- two nested levels: Pastes (balanced); a singular fit (Dyestuff2); a larger unbalanced
# two-level design with correlated slopes (Exam)
pastes <- read_case(file.path(ref, "pastes.csv"), c("batch", "cask"))
dyestuff2 <- read_case(file.path(ref, "dyestuff2.csv"), c("Batch"))
exam <- read_case(file.path(ref, "exam.csv"), c("school"))
write_case("nested", list(
  pastes = case("pastes", "strength ~ 1 + (1 | batch/cask)", pastes, "pastes.csv", integer(0),
                "balanced, two nested levels"),
  dyestuff2 = case("dyestuff2", "Yield ~ 1 + (1 | Batch)", dyestuff2, "dyestuff2.csv", integer(0),
                   "singular fit: the Batch variance is estimated at 0"),
  exam_slopes = case("exam_slopes", "normexam ~ standLRT + (standLRT | school)", exam,
                     "exam.csv", integer(0), "65 schools of 2-198 students, correlated slopes",
                     list(standLRT = function(fit) term_L(fit, "standLRT")))
), "", "Pastes, Dyestuff2 and Exam from ../shared/reference")
