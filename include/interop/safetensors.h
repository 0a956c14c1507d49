/* safetensors.h: Hugging Face's safetensors container, read and written.
 *
 * Layout (https://github.com/huggingface/safetensors, README "Format"): an 8-byte
 * little-endian header length N; N bytes of JSON mapping each tensor name to
 * {"dtype", "shape", "data_offsets": [begin, end]} plus an optional "__metadata__"
 * object of strings; then the data, each tensor's row-major little-endian bytes at
 * [begin, end) of the buffer that follows the header. The header is padded with spaces
 * to a multiple of 8 bytes so that the data is aligned.
 *
 * Reading validates everything before any tensor is used: the header's length against
 * the file, its JSON, every dtype and shape, and the ranges tiling the data (no two
 * overlapping, no byte between or after them). Errors name the file and the tensor or field. Tensors are read one
 * at a time with pread and converted to float32, so a reader holds one file descriptor and
 * the header, never the file.
 *
 * Writing is float32 only, deterministic (tensors in the order given, the header's keys
 * sorted), and streams: each tensor is asked for when its bytes are due. */
#ifndef GPT_SAFETENSORS_H
#define GPT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The header may not exceed this (the reference implementation's limit, 100 MB). */
#define ST_MAX_HEADER ((uint64_t)100000000)
#define ST_MAX_DIMS 8

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64 } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte range in the data buffer */
} StTensor;

typedef struct {
    char *path;
    int fd;
    uint64_t data_start, data_size; /* file offset and length of the data buffer */
    int n;
    StTensor *tensors;              /* in header order */
} SafeTensors;

/* Opens and validates a file; NULL with gpt_error() naming PATH and the field. */
SafeTensors *st_open(const char *path);
void st_close(SafeTensors *s);
const StTensor *st_find(const SafeTensors *s, const char *name);
int64_t st_numel(const StTensor *t);
/* Reads tensor t into out (st_numel floats), converted from its dtype. */
int st_read_f32(const SafeTensors *s, const StTensor *t, float *out);

/* A tensor to write: float32 of the given shape. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];
} StOut;
/* A tensor's values when the writer reaches it: get(ctx, i, scratch) returns tensor i's
 * numel floats, in place or produced into scratch (scratch_floats of them). */
typedef const float *(*StGet)(void *ctx, int i, float *scratch);
/* Writes n tensors and the metadata (key/value string pairs, n_meta of them) to f.
 * -1 with gpt_error() naming PATH (used only for messages) on a write error. */
int st_write(FILE *f, const char *path, const StOut *t, int n, const char *const (*meta)[2], int n_meta,
             StGet get, void *ctx, size_t scratch_floats);

#endif
