/* run_dir.h: a training run's directory: its lock, config.json, metrics.jsonl and the
 * report of settings changed on resume. Rank 0 alone touches these files.
 *
 * A run directory belongs to one run at a time: the run holds an flock(2) on RUN_DIR/lock
 * for its whole life, which the kernel releases however the process ends, so a crashed or
 * killed run never leaves a stale lock. The lock file names the holder's PID and host so
 * that a refused second run can say who has it.
 *
 * What makes a directory "hold a run" is what a resume or a prune could take for the
 * run's own: a checkpoint (ckpt_<step>.h5), `latest`, model.h5 or a metrics line. A
 * config.json left by a start that never completed a step is not, so a failed start (out
 * of memory, say) never blocks the next attempt. */
#ifndef GPT_RUN_DIR_H
#define GPT_RUN_DIR_H

#include <jansson.h>
#include <stdio.h>

/* Rank 0: creates the run directory if needed and takes its lock; returns the lock's
 * file descriptor (keep it open for the run), or -1 naming the PID and host of the run
 * that holds it, or why the directory cannot be made. */
int run_dir_lock(const char *out);
/* Rank 0: writes this process's PID and host into the lock file, once the run is
 * accepted (a refused run leaves the directory as it found it). */
void run_dir_claim(int fd);
void run_dir_unlock(int fd);

/* Rank 0: -1 naming what in out belongs to another run (a checkpoint, latest, model.h5,
 * a non-empty metrics.jsonl), which a fresh run without --overwrite must not mix with. */
int run_dir_check_unused(const char *out);

/* Rank 0, for --overwrite (after the model is made, so that one that cannot be loses
 * nothing): removes everything of a previous run (run_is_run_file:
 * checkpoints, latest, model.h5, metrics.jsonl, config.json, and their .tmp files). */
int run_dir_clear(const char *out);

/* Rank 0, in a directory run_dir_lock made and holds (checked unused, cleared or resumed
 * from): writes config.json (atomic.h) and starts metrics.jsonl; a resumed run
 * (resumed_step > 0) first moves the checkpoints past that step aside
 * (run_retire_checkpoints), and keeps its metrics up to that step. */
int run_dir_prepare(const char *out, json_t *config, long resumed_step);

/* Rank 0: opens RUN_DIR/metrics.jsonl for appending (a descriptor, or -1 with gpt_error())
 * and writes a line to it whole or not at all: a line that cannot be written (a full
 * disk) is cut off again, so the file always ends with a whole line (-1 naming the file). */
int run_metrics_open(const char *out);
int run_metrics_write(int fd, const char *out, json_t *line);

/* Rank 0: one line listing the settings of config JSON now_text that differ from
 * saved_text's (sections "versions" and "resume" aside). */
void run_report_changes(const char *saved_text, const char *now_text);

#endif
