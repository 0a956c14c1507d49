/* run_layout.h: the names of a run directory's files, spelled here and nowhere else.
 *
 * RUN_DIR (gpt train/finetune --out, docs/training.md) holds config.json (the resolved
 * configuration), metrics.jsonl (a line a step), lock (held for the run's life,
 * run_dir.h), the checkpoints ckpt_<step>.h5 (checkpoint.h), `latest` (one line: the
 * newest checkpoint's file name), at the end model.h5, and abandoned/: the checkpoints
 * of a timeline that a resume from an earlier step left behind. The run loop, the
 * checkpoint writer and --overwrite all build their paths here, so they cannot disagree
 * on a name. Not collective; a path that does not fit its buffer is -1 naming it. */
#ifndef GPT_RUN_LAYOUT_H
#define GPT_RUN_LAYOUT_H

#include <stddef.h>

#define RUN_CONFIG "config.json"
#define RUN_METRICS "metrics.jsonl"
#define RUN_LOCK "lock"
#define RUN_LATEST "latest"
#define RUN_MODEL "model.h5"
#define RUN_ABANDONED "abandoned"

/* RUN_DIR/NAME into buf[size]. */
int run_path(char *buf, size_t size, const char *run_dir, const char *name);
/* RUN_DIR/ckpt_<step>.h5 into buf[size]. */
int run_ckpt_path(char *buf, size_t size, const char *run_dir, long step);

/* Whether a file name in a run directory is a run's own: a checkpoint, latest, model.h5,
 * metrics.jsonl, config.json, or the temporary file of one of them (atomic.h). Not the
 * lock, which belongs to whoever holds it. */
int run_is_run_file(const char *name);

/* The steps of the checkpoints in run_dir, newest first, in a new array (the caller
 * frees it); returns how many (0 if none or no such directory). */
int run_ckpt_list(const char *run_dir, long **steps);

/* The checkpoints' steps in the order --resume auto tries them: the one latest names
 * first (its timeline is the run's, even with a later checkpoint beside it), then the
 * others newest first; as run_ckpt_list. */
int run_resume_order(const char *run_dir, long **steps);

/* Rank 0: RUN_DIR/latest names the checkpoint of `step`, replaced atomically (atomic.h). */
int run_point_latest(const char *run_dir, long step);
/* The step of the checkpoint RUN_DIR/latest names, or -1 (no latest, or not a name of one). */
long run_latest_step(const char *run_dir);
/* Rank 0, for a run resumed at `step`: moves each checkpoint of a later step into
 * RUN_DIR/abandoned/ (under its name, or NAME with .1, .2, ... before .h5 if that is
 * taken), saying so on stdout, then points latest at the newest checkpoint left (or
 * removes it if none is). Otherwise --keep would prune the resumed run's checkpoints as
 * the oldest, and --resume auto would continue the abandoned timeline. Moving before
 * repointing: a crash between leaves latest naming a missing file, which auto skips.
 * -1 naming the file that cannot be moved. */
int run_retire_checkpoints(const char *run_dir, long step);
/* Rank 0: removes all but the `keep` newest checkpoints, never that of step `written`
 * (just written, which latest names); a failure to remove one is only a warning of
 * `gpt CMD` (the run goes on, the file stays). */
void run_prune_checkpoints(const char *cmd, const char *run_dir, int keep, long written);

#endif
