# glmer on a binary benchmark design: Rscript glmer_fit.R data.csv "formula"  -> JSON on stdout
# Grouping columns (every column but pass and tutoring) are read as character.
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
form <- if (length(args) > 1) args[2] else
  "pass ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
head <- names(read.csv(args[1], nrows = 1))
cls <- ifelse(head %in% c("pass", "tutoring"), "numeric", "character")
d <- read.csv(args[1], colClasses = cls)
t0 <- proc.time()
fit <- glmer(as.formula(form), d, family = binomial)
dt <- proc.time() - t0
secs <- dt[["elapsed"]]
cpu <- dt[["user.self"]] + dt[["sys.self"]]
cat(toJSON(list(seconds = secs, cpu_seconds = cpu, minus2logLik = -2 * as.numeric(logLik(fit)),
                theta = as.list(getME(fit, "theta")), beta = as.list(fixef(fit)),
                feval = fit@optinfo$feval, lme4 = as.character(packageVersion("lme4")),
                R = R.version.string),
           digits = I(15), auto_unbox = TRUE))
