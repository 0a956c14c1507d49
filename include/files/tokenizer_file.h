/* tokenizer_file.h: a tokenizer in HDF5 (docs/formats.md): the group "tokenizer" that
 * tokenizer files, corpora, checkpoints, model and task files carry, so that each file
 * alone can encode and decode; and the tokenizer file (format "gpt-tokenizer") of
 * `gpt tokenizer train` and `import`. Serial HDF5: one process writes or reads. */
#ifndef GPT_TOKENIZER_FILE_H
#define GPT_TOKENIZER_FILE_H

#include <stdint.h>

#include "text/tokenizer.h"

/* The tokenizer as group "tokenizer" of an open file or group (an hid_t); -1 on a
 * failed write (HDF5's message is silenced: the caller names the file). */
int tokenizer_write_h5(const Tokenizer *t, int64_t loc_id);
/* The group "tokenizer" of an open file or group, checked; the caller owns the result.
 * NULL with gpt_error() naming path_for_errors. */
Tokenizer *tokenizer_read_h5(int64_t loc_id, const char *path_for_errors);
/* An upper bound on the bytes tokenizer_write_h5 adds to a file (0 for NULL), which
 * writers reserve before a full disk could meet HDF5. */
uint64_t tokenizer_h5_bytes(const Tokenizer *t);

/* Writes a tokenizer file, whole or not at all (base/atomic.h). */
int tokenizer_save(const Tokenizer *t, const char *path);
/* A tokenizer file, or any file with a /tokenizer group; NULL with gpt_error(). */
Tokenizer *tokenizer_load(const char *path);

#endif
