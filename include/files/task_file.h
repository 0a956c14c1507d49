/* task_file.h: the task file (docs/formats.md), `gpt prepare-task`'s output and the data
 * of `gpt finetune`: task data (text/task.h) in HDF5, with the tokenizer that made it.
 *
 * It keeps the two splits, /train and /val, each with the tokens of all sequences, the
 * sequences' offsets, the examples' offsets into the sequences and one label per
 * example; task data is small next to a corpus, so a rank loads the whole file. Serial
 * HDF5: one process writes or reads it. */
#ifndef GPT_TASK_FILE_H
#define GPT_TASK_FILE_H

#include "text/task.h"
#include "text/tokenizer.h"

/* Writes d as the task file path (with tok as /tokenizer and source, the input's name,
 * as an attribute), whole or not at all (base/atomic.h). -1 with gpt_error() also for
 * records without labels. */
int task_write(const char *path, const TaskData *d, const Tokenizer *tok, const char *source);
/* Loads a task file whole, every checksum and offset verified; the caller owns the
 * result (task_free). NULL with gpt_error(). */
TaskData *task_load(const char *path);

#endif
