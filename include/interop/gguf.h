/* gguf.h: a writer of GGUF version 3 files, ggml's container for llama.cpp.
 *
 * Layout (ggml's docs/gguf.md, github.com/ggml-org/ggml): "GGUF", version 3 (u32), tensor count and key-value count
 * (u64); the key-value pairs (a key is a string: u64 length then bytes; a value a u32 type
 * then its bytes, arrays a u32 item type, a u64 count and the items); one info per tensor
 * (name, u32 dimensions, u64 sizes with ne[0] the fastest-varying, u32 ggml type, u64
 * offset into the data section); padding to GGUF_ALIGNMENT; then each tensor's data,
 * padded to the alignment. All little-endian.
 *
 * A writer collects the key-values and the tensor infos, then streams the data: each
 * tensor is asked for as float32 when its bytes are due and stored as its type (F32, or
 * F16 rounded to nearest even). The output depends only on what was added: the same
 * calls give the same bytes. */
#ifndef GGUF_WRITER_H
#define GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GGUF_ALIGNMENT 32
enum { GGUF_TYPE_F32 = 0, GGUF_TYPE_F16 = 1 }; /* ggml_type */

typedef struct GgufWriter GgufWriter;

GgufWriter *gguf_writer_create(void);
void gguf_writer_free(GgufWriter *g);

void gguf_add_string(GgufWriter *g, const char *key, const char *value);
void gguf_add_u32(GgufWriter *g, const char *key, uint32_t value);
void gguf_add_f32(GgufWriter *g, const char *key, float value);
/* Arrays: n strings (lengths given, so a string may hold any bytes), and n int32 values. */
void gguf_add_strings(GgufWriter *g, const char *key, const char *const *values, const size_t *lengths, size_t n);
void gguf_add_i32s(GgufWriter *g, const char *key, const int32_t *values, size_t n);

/* A tensor of ndim (1 or 2) sizes in ggml's order (ne[0] fastest: a row-major [rows, cols]
 * matrix is {cols, rows}) and type GGUF_TYPE_F32 or _F16. */
void gguf_add_tensor(GgufWriter *g, const char *name, int ndim, const uint64_t *ne, int type);

/* Writes the file to f; get(ctx, i, scratch) returns tensor i (in the order added) as
 * float32, in place or produced into scratch (scratch_floats of them). -1 with
 * gpt_error() naming PATH on a write error. */
int gguf_write(GgufWriter *g, FILE *f, const char *path, const float *(*get)(void *ctx, int i, float *scratch),
               void *ctx, size_t scratch_floats);

#endif
