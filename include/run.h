/* run.h: what every training command (train, finetune) does around its loop: the run
 * directory with config.json and metrics.jsonl, the stop signals, the time limit, and the
 * report of settings changed on resume. Rank 0 alone touches the files. */
#ifndef GPT_RUN_H
#define GPT_RUN_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>

/* How a training command runs, checkpoints and stops (gpt train and gpt finetune take
 * the same options for these; cli/options.c parses them). */
typedef struct {
    int eval_every, log_every;
    int max_bad_steps;        /* non-finite steps in a row before the run stops */
    int threads;              /* BLAS threads a rank */
    int overwrite;
    long ckpt_every;          /* steps between checkpoints; 0: none */
    double ckpt_minutes;      /* minutes between checkpoints; 0: none */
    int keep;                 /* newest checkpoints kept; 0: all */
    const char *resume;       /* NULL, "auto" or a checkpoint */
    double time_limit;        /* seconds after t_start by which the run must have stopped; 0: none */
    double t_start;           /* now_seconds() at process start */
} RunOptions;

/* Rank 0: creates the run directory with config.json and an empty metrics.jsonl,
 * refusing one that holds another run unless overwriting or resuming; a resumed run
 * (resumed_step > 0) keeps its metrics up to that step. */
int run_dir_prepare(const char *out, int overwrite, int resuming, json_t *config, long resumed_step);
/* Rank 0: opens RUN_DIR/metrics.jsonl for appending (NULL on failure) and writes lines. */
FILE *run_metrics_open(const char *out);
void run_metrics_write(FILE *f, json_t *line);

/* The first SIGTERM, SIGINT or SIGUSR1 sets run_stop_signal; a second one of the same
 * kind has its default effect, so a stuck run can still be interrupted. */
extern volatile sig_atomic_t run_stop_signal;
void run_catch_stop_signals(void);
/* "on SIGTERM", ..., or `otherwise` when no signal came to this rank. */
const char *run_stop_reason(const char *otherwise);

/* Rank 0: whether a run that must end by t_start + time_limit (0: never) has to stop now
 * to still fit the rest of a step, an evaluation and a checkpoint (seconds measured). */
int run_out_of_time(double time_limit, double t_start, double step_s, double eval_s, double ckpt_s);

/* "M:SS" or "H:MM:SS" */
void run_print_duration(char *buf, size_t size, double seconds);

/* Rank 0: one line listing the settings of config JSON now_text that differ from
 * saved_text's (sections "versions" and "resume" aside). */
void run_report_changes(const char *saved_text, const char *now_text);

#endif
