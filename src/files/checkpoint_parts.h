/* checkpoint_parts.h (private to checkpoint_*.c): where each part of a checkpoint lives,
 * in the file and in memory, for the reader and the writer alike.
 *
 * A checkpoint holds three parts of the same layout: the parameters (/model) and the
 * two AdamW moments (/optimizer/m, /optimizer/v). In memory the parameters are always
 * whole; the moments are whole, or under --shard-optimizer only this rank's shard
 * (shard.h), packed: its elements end to end in buffer order (Shard's at). Extras (CkptExtra) go to GROUP,
 * /optimizer/m/GROUP and /optimizer/v/GROUP. */
#ifndef GPT_CHECKPOINT_PARTS_H
#define GPT_CHECKPOINT_PARTS_H

#include <stdio.h>

#include "files/checkpoint.h"
#include "model/shard.h"

enum { CKPT_PARTS = 3 };

/* Part p's group in the file. */
static inline const char *ckpt_part_group(int p) {
    static const char *const group[CKPT_PARTS] = {"/model", "/optimizer/m", "/optimizer/v"};
    return group[p];
}

/* Part p's buffer. */
static inline float *ckpt_part_data(const GPT *m, const AdamW *o, int p) {
    return p == 0 ? m->params : p == 1 ? o->m : o->v;
}

/* Whether part p's buffer holds every element (else only this rank's shard, packed). */
static inline int ckpt_part_whole(const GPT *m, const AdamW *o, int p) {
    return p == 0 || adamw_whole(o, m->n_params);
}

/* Floats in a row of t (a 1-D tensor's rows are its elements). */
static inline size_t ckpt_row_floats(const GPTTensor *t) { return t->ndim == 2 ? (size_t)t->shape[1] : 1; }

/* Where this rank's rows of tensor i (sh->lo[i] on) lie in a buffer of a part: whole,
 * or packed as sh. */
static inline size_t ckpt_rows_index(const GPT *m, const Shard *sh, int i, int packed) {
    const GPTTensor *t = &m->tensors[i];
    return packed ? sh->at[i] : t->offset + (size_t)sh->lo[i] * ckpt_row_floats(t);
}

/* Where an extra set's three parts go: GROUP, /optimizer/m/GROUP, /optimizer/v/GROUP. */
static inline void ckpt_extra_groups(const CkptExtra *x, char where[CKPT_PARTS][128]) {
    snprintf(where[0], sizeof where[0], "/%s", x->group);
    snprintf(where[1], sizeof where[1], "/optimizer/m/%s", x->group);
    snprintf(where[2], sizeof where[2], "/optimizer/v/%s", x->group);
}

#endif
