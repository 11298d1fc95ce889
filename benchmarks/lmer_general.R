# Fit one lme4 formula to a CSV and report timing, memory and estimates as one JSON object on stdout
# (diagnostics go to stderr). Used by benchmarks/bench_general.py.
#
# Usage:  Rscript benchmarks/lmer_general.R DATA.csv "FORMULA" [REPEATS]
#
# The id columns stay integers, as a user would pass them: lmer() builds the grouping factors (and
# interactions such as dist_id:school_id) inside the timed call. Only lmer() is timed
# (system.time, elapsed seconds), REML = TRUE with lme4's default control.

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 2L) stop("usage: Rscript lmer_general.R DATA.csv FORMULA [REPEATS]")
csv_path <- args[[1L]]
form <- as.formula(args[[2L]])
repeats <- if (length(args) >= 3L) as.integer(args[[3L]]) else 1L

proc_status_mib <- function(field) {
  path <- "/proc/self/status"
  if (!file.exists(path)) return(NA_real_)
  line <- grep(paste0("^", field, ":"), readLines(path, warn = FALSE), value = TRUE)
  if (length(line) != 1L) return(NA_real_)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}
json_num <- function(x) {
  if (length(x) != 1L || is.na(x) || !is.finite(x)) return("null")
  formatC(x, digits = 17, format = "g")
}
json_str <- function(x) paste0("\"", gsub("\"", "\\\\\"", gsub("\\\\", "\\\\\\\\", x)), "\"")
json_num_array <- function(x) paste0("[", paste(vapply(x, json_num, ""), collapse = ", "), "]")
json_str_array <- function(x) paste0("[", paste(vapply(x, json_str, ""), collapse = ", "), "]")
json_named_num <- function(x) {
  if (length(x) == 0L) return("{}")
  paste0("{", paste(json_str(names(x)), vapply(unname(x), json_num, ""), sep = ": ",
                    collapse = ", "), "}")
}

dat <- if (requireNamespace("data.table", quietly = TRUE)) {
  as.data.frame(data.table::fread(csv_path, showProgress = FALSE))
} else {
  read.csv(csv_path)
}
invisible(gc(reset = TRUE))
rss_before <- proc_status_mib("VmRSS")

times <- numeric(repeats)
warnings_seen <- character(0)
fit <- NULL
for (i in seq_len(repeats)) {
  fit <- NULL
  times[i] <- system.time(
    fit <- withCallingHandlers(
      lmer(form, data = dat, REML = TRUE),
      warning = function(w) {
        warnings_seen <<- c(warnings_seen, conditionMessage(w))
        invokeRestart("muffleWarning")
      },
      message = function(m) {
        warnings_seen <<- c(warnings_seen, conditionMessage(m))
        invokeRestart("muffleMessage")
      }
    )
  )[["elapsed"]]
  message(sprintf("lmer fit %d/%d: %.2f s", i, repeats, times[i]))
}
peak_rss <- proc_status_mib("VmHWM")
opt <- fit@optinfo
vc <- as.data.frame(VarCorr(fit))
cat(paste0(
  "{",
  "\"engine\": \"lme4\", ",
  "\"lme4_version\": ", json_str(as.character(packageVersion("lme4"))), ", ",
  "\"formula\": ", json_str(deparse(form, width.cutoff = 500L)), ", ",
  "\"nobs\": ", json_num(nobs(fit)), ", ",
  "\"times_s\": ", json_num_array(times), ", ",
  "\"median_s\": ", json_num(stats::median(times)), ", ",
  "\"rss_before_fit_mib\": ", json_num(rss_before), ", ",
  "\"peak_rss_mib\": ", json_num(peak_rss), ", ",
  "\"reml_criterion\": ", json_num(unname(getME(fit, "devcomp")$cmp[["REML"]])), ", ",
  "\"theta\": ", json_named_num(getME(fit, "theta")), ", ",
  "\"sigma\": ", json_num(sigma(fit)), ", ",
  "\"fixef\": ", json_named_num(fixef(fit)), ", ",
  "\"varcorr\": {\"group\": ", json_str_array(vc$grp),
  ", \"term\": ", json_str_array(ifelse(is.na(vc$var1), "", vc$var1)),
  ", \"sd\": ", json_num_array(vc$sdcor), "}, ",
  "\"feval\": ", json_num(if (is.null(opt$feval)) NA else opt$feval), ", ",
  "\"warnings\": ", json_str_array(unique(warnings_seen)),
  "}\n"
))
