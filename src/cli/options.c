/* options.c: the options of RunOptions (run.h), which gpt train and gpt finetune share:
 * one table, one parser, one help text. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "base/util.h"
#include "dist/watchdog.h"

void run_options_defaults(RunOptions *r) {
    *r = (RunOptions){.eval_every = 100, .log_every = 10, .max_bad_steps = 5, .threads = 1, .keep = 3,
                      .t_start = now_seconds(), .collective_timeout = WATCHDOG_DEFAULT_S};
}

int run_option(RunOptions *r, int opt, const char *arg, const char **bad) {
    float minutes, seconds;
    *bad = NULL;
    switch (opt) {
    case RUN_OPT_EVAL_EVERY: if (parse_int(arg, &r->eval_every) || r->eval_every < 0) *bad = "--eval-every: expected an integer >= 0"; break;
    case RUN_OPT_LOG_EVERY: if (parse_int(arg, &r->log_every) || r->log_every < 1) *bad = "--log-every: expected a positive integer"; break;
    case RUN_OPT_MAX_BAD: if (parse_int(arg, &r->max_bad_steps) || r->max_bad_steps < 1) *bad = "--max-bad-steps: expected a positive integer"; break;
    case RUN_OPT_THREADS: if (parse_int(arg, &r->threads) || r->threads < 1) *bad = "--threads: expected a positive integer"; break;
    case RUN_OPT_OVERWRITE: r->overwrite = 1; break;
    case RUN_OPT_ALLOW_DATA_CHANGE: r->allow_data_change = 1; break;
    case RUN_OPT_SHARD_OPTIMIZER: r->shard_optimizer = 1; break;
    case RUN_OPT_ASYNC_CKPT: r->async_ckpt = 1; break;
    case RUN_OPT_PRECISION: if (precision_parse(arg, &r->precision)) *bad = CLI_PRECISION_EXPECTED; break;
    case RUN_OPT_CKPT_EVERY: if (parse_long(arg, &r->ckpt_every) || r->ckpt_every < 0) *bad = "--ckpt-every: expected an integer >= 0"; break;
    case RUN_OPT_CKPT_MINUTES:
        if (parse_float(arg, &minutes) || !(minutes >= 0.0f)) *bad = "--ckpt-minutes: expected a number >= 0";
        else r->ckpt_minutes = minutes;
        break;
    case RUN_OPT_KEEP: if (parse_int(arg, &r->keep) || r->keep < 0) *bad = "--keep: expected an integer >= 0"; break;
    case RUN_OPT_RESUME: if (!*arg) *bad = "--resume: expected auto or a checkpoint file"; r->resume = arg; break;
    case RUN_OPT_COLLECTIVE_TIMEOUT:
        if (parse_float(arg, &seconds) || !(seconds >= 0.0f))
            *bad = "--collective-timeout: expected seconds >= 0 (0: no limit)";
        else r->collective_timeout = seconds;
        break;
    case RUN_OPT_TIME_LIMIT:
        if (parse_duration(arg, &r->time_limit))
            *bad = "--time-limit: expected a duration like 90 (minutes), 1:30:00 or 1-12:00:00 (minutes and seconds "
                   "below 60, hours below 24 after days), or UNLIMITED";
        break;
    default: return 0;
    }
    return 1;
}

const char *run_options_conflict(const RunOptions *r) {
    return r->overwrite && r->resume ? "--overwrite and --resume contradict each other: --overwrite starts afresh, "
                                       "removing the run directory's old run"
                                     : NULL;
}
