/* corpus_check.h: a corpus file verified whole, by one process (gpt inspect): its
 * attributes and tokenizer, and every token and document offset read through HDF5's
 * Fletcher32 check, tokens inside the vocabulary, offsets in order, sizes as the
 * attributes say. Memory stays bounded (blocks of 2^20 elements) whatever its size. */
#ifndef GPT_CORPUS_CHECK_H
#define GPT_CORPUS_CHECK_H

#include <stdint.h>

#include "text/tokenizer.h"

enum { CORPUS_CHECK_FIRST = 24 };

typedef struct {
    int vocab_size, eot_token;
    int64_t tokens[2], docs[2];          /* by split, SPLIT_TRAIN and SPLIT_VAL (data.h) */
    int32_t first[CORPUS_CHECK_FIRST];   /* the train split's first tokens */
    int n_first;
    Tokenizer *tok;                      /* the corpus's tokenizer: the caller's to free */
} CorpusCheck;

/* 0 with *out filled, or -1 with gpt_error() naming the file, the dataset and what is
 * wrong (out->tok is then NULL). */
int corpus_check(const char *path, CorpusCheck *out);

#endif
