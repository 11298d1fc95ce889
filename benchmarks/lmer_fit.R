# Fit the four-level nested random-intercept model with lme4 and report timing, memory and
# estimates as one JSON object on stdout (diagnostics go to stderr).
#
# Usage:  Rscript benchmarks/lmer_fit.R DATA.csv [REPEATS]
#
# The CSV needs the columns dist_id, school_id, teach_id, student_id, tutoring, perform (as written
# by benchmarks/run.py from tiers.simulation.data). The model is
#     lmer(perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id), REML = TRUE)
# with lme4's default control. Only the lmer() call is timed (system.time, elapsed seconds); the
# median over REPEATS fits is reported together with every single time.
#
# Memory:
#   rss_before_fit_mib  VmRSS of this R process after reading the data, before the first fit
#   peak_rss_mib        VmHWM (peak resident set) of this R process at the end, data reading
#                       included; Linux only (null elsewhere)
#   r_heap_max_fit_mib  R heap "max used" (Ncells + Vcells, gc()) during the fits, after a
#                       gc(reset = TRUE) taken once the data were read. It does not count memory
#                       that Matrix/CHOLMOD allocate outside the R heap.

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1L) {
  stop("usage: Rscript lmer_fit.R DATA.csv [REPEATS]")
}
csv_path <- args[[1L]]
repeats <- if (length(args) >= 2L) as.integer(args[[2L]]) else 3L
if (is.na(repeats) || repeats < 1L) stop("REPEATS must be a positive integer")

# ---- small helpers --------------------------------------------------------------------------

proc_status_mib <- function(field) {
  # Read a kB field (VmRSS, VmHWM) of /proc/self/status; NA where there is no /proc.
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

json_str <- function(x) {
  x <- gsub("\\\\", "\\\\\\\\", x)
  x <- gsub("\"", "\\\\\"", x)
  x <- gsub("\n", "\\\\n", x)
  x <- gsub("\t", "\\\\t", x)
  paste0("\"", x, "\"")
}

json_num_array <- function(x) paste0("[", paste(vapply(x, json_num, ""), collapse = ", "), "]")

json_str_array <- function(x) paste0("[", paste(vapply(x, json_str, ""), collapse = ", "), "]")

json_named_num <- function(x) {
  if (length(x) == 0L) return("{}")
  paste0("{", paste(json_str(names(x)), vapply(unname(x), json_num, ""), sep = ": ",
                    collapse = ", "), "}")
}

# ---- read ---------------------------------------------------------------------------------

t_read <- system.time({
  if (requireNamespace("data.table", quietly = TRUE)) {
    reader <- "data.table::fread"
    dat <- as.data.frame(data.table::fread(csv_path, showProgress = FALSE))
  } else {
    reader <- "read.csv"
    dat <- read.csv(csv_path)
  }
})[["elapsed"]]
# The id columns stay integer, as a user would pass them: lmer() builds the (interaction) factors
# itself, inside the timed call, just as tiers.fit() factorises its integer ids.

invisible(gc(reset = TRUE))
rss_before <- proc_status_mib("VmRSS")

# ---- fit, timed ------------------------------------------------------------------------------

form <- perform ~ tutoring + (1 | dist_id / school_id / teach_id / student_id)
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

gc_after <- gc()
# column 6 of gc()'s matrix is "max used" in Mb, rows Ncells and Vcells
heap_max <- sum(gc_after[, 6L])
peak_rss <- proc_status_mib("VmHWM")

# ---- estimates ------------------------------------------------------------------------------

theta <- getME(fit, "theta")
vc <- as.data.frame(VarCorr(fit))
vc_groups <- vc$grp
vc_terms <- ifelse(is.na(vc$var1), "", vc$var1)
vc_sd <- vc$sdcor
reml_crit <- if (exists("REMLcrit", where = asNamespace("lme4"), inherits = FALSE)) {
  lme4::REMLcrit(fit)
} else {
  unname(getME(fit, "devcomp")$cmp[["REML"]])
}
opt <- fit@optinfo
conv_msgs <- unlist(opt$conv$lme4$messages)
if (is.null(conv_msgs)) conv_msgs <- character(0)
n_levels <- vapply(getME(fit, "flist"), nlevels, integer(1L))

out <- paste0(
  "{",
  "\"engine\": \"lme4\", ",
  "\"lme4_version\": ", json_str(as.character(packageVersion("lme4"))), ", ",
  "\"matrix_version\": ", json_str(as.character(packageVersion("Matrix"))), ", ",
  "\"r_version\": ", json_str(paste(R.version$major, R.version$minor, sep = ".")), ", ",
  "\"reader\": ", json_str(reader), ", ",
  "\"read_s\": ", json_num(t_read), ", ",
  "\"nobs\": ", json_num(nobs(fit)), ", ",
  "\"n_levels\": ", json_named_num(n_levels), ", ",
  "\"repeats\": ", repeats, ", ",
  "\"times_s\": ", json_num_array(times), ", ",
  "\"median_s\": ", json_num(stats::median(times)), ", ",
  "\"rss_before_fit_mib\": ", json_num(rss_before), ", ",
  "\"peak_rss_mib\": ", json_num(peak_rss), ", ",
  "\"r_heap_max_fit_mib\": ", json_num(heap_max), ", ",
  "\"reml_criterion\": ", json_num(reml_crit), ", ",
  "\"theta\": ", json_named_num(theta), ", ",
  "\"sigma\": ", json_num(sigma(fit)), ", ",
  "\"fixef\": ", json_named_num(fixef(fit)), ", ",
  "\"varcorr\": {\"group\": ", json_str_array(vc_groups),
  ", \"term\": ", json_str_array(vc_terms),
  ", \"sd\": ", json_num_array(vc_sd), "}, ",
  "\"optimizer\": ", json_str(if (is.null(opt$optimizer)) "" else opt$optimizer), ", ",
  "\"feval\": ", json_num(if (is.null(opt$feval)) NA else opt$feval), ", ",
  "\"convergence_messages\": ", json_str_array(conv_msgs), ", ",
  "\"warnings\": ", json_str_array(unique(warnings_seen)),
  "}"
)
cat(out, "\n", sep = "")
