# nlme's Wald intervals of the residual structures with two Hessians, for tests/test_rside.py.
# nlme's intervals() inverts apVar, the Hessian of the log-likelihood in (log SDs, the structure's
# unconstrained parameters, log sigma) by fdHess with relStep = .Machine$double.eps^(1/3) ~ 6e-6.
# Where the likelihood is nearly flat in one direction (a student SD near zero, strongly tied to
# phi) that step is too small: rounding of the log-likelihood dominates the second differences.
# This script records, per model, the intervals from nlme's default apVar and from the Hessian of
# the same nlme function (lmeApVar.fullLmeLogLik, same parameters, same point) by Richardson
# extrapolation (numDeriv::hessian), and fdHess's standard errors at three steps.
# Data: rside_sim.csv (made by make_rside.R). Run from this folder: Rscript make_rside_hessian.R
suppressMessages({library(nlme); library(numDeriv); library(jsonlite)})
d <- read.csv("rside_sim.csv")
d$mode <- factor(d$mode)
ctl <- lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, tolerance = 1e-10,
                  msTol = 1e-12, opt = "nlminb")
default_apvar <- nlme:::lmeApVar
steps <- list()
# nlme's lmeApVar set-up (natural parameters: SDs on the log scale), the Hessian by Richardson
richardson_apvar <- function(lmeSt, sigma, conLin = attr(lmeSt, "conLin"),
                             .relStep = .Machine$double.eps^(1/3), minAbsPar = 0, natural = TRUE) {
  dims <- conLin$dims
  sett <- attr(lmeSt, "settings")
  N <- dims$N - sett[1L] * dims$ncol[dims$Q + 1L]
  sett[2:3] <- c(1, 0)
  conLin[["logLik"]] <- 0
  reSt <- lmeSt[["reStruct"]]
  for (i in seq_along(reSt)) {
    matrix(reSt[[i]]) <- as.double(sigma^2) * pdMatrix(reSt[[i]])
    if (inherits(reSt[[i]], "pdSymm") && natural) reSt[[i]] <- pdNatural(reSt[[i]])
  }
  lmeSt[["reStruct"]] <- reSt
  Pars <- c(coef(lmeSt), lSigma = log(sigma))
  fn <- function(p) nlme:::lmeApVar.fullLmeLogLik(p, lmeSt, conLin, dims, N, sett)
  se <- function(H) unname(sqrt(diag(solve(-H))))
  steps[[length(steps) + 1]] <<- list(
    parameters = names(Pars),
    se_fdhess_default = se(fdHess(Pars, fn)$Hessian),
    se_fdhess_1e4 = se(fdHess(Pars, fn, .relStep = 1e-4)$Hessian),
    se_fdhess_1e3 = se(fdHess(Pars, fn, .relStep = 1e-3)$Hessian),
    se_richardson = se(numDeriv::hessian(fn, Pars)))
  val <- solve(-numDeriv::hessian(fn, Pars))
  dimnames(val) <- list(names(Pars), names(Pars))
  attr(val, "Pars") <- Pars
  attr(val, "natural") <- natural
  val
}
rows <- function(m) if (is.null(m)) NULL else lapply(seq_len(nrow(m)), function(i) list(
  name = rownames(m)[i], lower = unname(m[i, "lower"]), estimate = unname(m[i, "est."]),
  upper = unname(m[i, "upper"])))
summarise <- function(fit) {
  iv <- intervals(fit, which = "var-cov")
  list(random_sd = lapply(iv$reStruct, function(m) list(lower = m[1, "lower"], upper = m[1, "upper"])),
       correlation = rows(iv$corStruct), variance_function = rows(iv$varStruct),
       sigma = as.list(iv$sigma))
}
cases <- list(
  ar1_gaps = list(random = ~ 1 | school/student, cor = corAR1(form = ~ wave | school/student), w = NULL),
  car1_gaps = list(random = ~ 1 | school/student, cor = corCAR1(form = ~ months | school/student), w = NULL),
  car1_wave = list(random = ~ 1 | school/student, cor = corCAR1(form = ~ wave | school/student), w = NULL),
  ar1_varident = list(random = ~ 1 | school/student, cor = corAR1(form = ~ wave | school/student),
                      w = varIdent(form = ~ 1 | mode))
)
fits <- list()
for (nm in names(cases)) {
  cs <- cases[[nm]]
  args <- list(fixed = y ~ x + wave, random = cs$random, data = d, method = "REML", control = ctl,
               correlation = cs$cor)
  if (!is.null(cs$w)) args$weights <- cs$w
  assignInNamespace("lmeApVar", default_apvar, "nlme")
  f0 <- do.call(lme, args)
  assignInNamespace("lmeApVar", richardson_apvar, "nlme")
  f1 <- do.call(lme, args)
  assignInNamespace("lmeApVar", default_apvar, "nlme")
  stopifnot(all.equal(logLik(f0), logLik(f1)))
  fits[[nm]] <- list(logLik = as.numeric(logLik(f0)), fdhess = summarise(f0),
                     richardson = summarise(f1), standard_errors = steps[[length(steps)]])
}
out <- list(case = "rside_sim", csv = "rside_sim.csv", method = "REML", fits = fits,
            software = list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
                            numDeriv = as.character(packageVersion("numDeriv")),
                            jsonlite = as.character(packageVersion("jsonlite"))),
            generated_by = "tests/data/rside/make_rside_hessian.R")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "rside_hessian.json")
