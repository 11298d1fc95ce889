# glmer on the binary seed design: Rscript glmer_fit.R data.csv  -> JSON on stdout
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(dist_id = "character", school_id = "character",
                                      teach_id = "character", student_id = "character"))
t0 <- proc.time()
fit <- glmer(pass ~ tutoring + (1 | dist_id/school_id/teach_id/student_id), d, family = binomial)
dt <- proc.time() - t0
secs <- dt[["elapsed"]]
cpu <- dt[["user.self"]] + dt[["sys.self"]]
cat(toJSON(list(seconds = secs, cpu_seconds = cpu, minus2logLik = -2 * as.numeric(logLik(fit)),
                theta = as.list(getME(fit, "theta")), beta = as.list(fixef(fit))),
           digits = I(15), auto_unbox = TRUE))
