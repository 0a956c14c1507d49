/* choice.h: multiple-choice evaluation by log-likelihood (gpt eval-choice), zero- and
 * few-shot, as GPT-2 and GPT-3 measured in-context learning.
 *
 * A record is one JSON object a line: {"context": "...", "endings": ["...", ...],
 * "label": i} (HellaSwag's own name "ctx" is accepted for "context"). The context and
 * each ending are tokenized separately and concatenated, so an ending's leading space
 * belongs to the ending: the context's trailing whitespace moves to the front of every
 * ending, and an ending that then starts with no whitespace after a non-empty context
 * gets one space (lm-evaluation-harness's target delimiter " ").
 *
 * The prompt of a record is
 *     <|endoftext|> shot_1 ... shot_K context
 * where a shot is a solved record of the shot pool: its context, its gold ending and the
 * separator, each piece tokenized on its own. The shots of record i are K distinct pool
 * records drawn with a key derived from (seed, i), never record i itself when the pool is
 * the evaluated file, so they depend on neither the number of ranks nor the order in
 * which records are scored. Every ending k of n_k tokens is scored after the prompt:
 * log p(e_1 | prompt) + ... + log p(e_n | prompt, e_1 .. e_{n-1}), which needs the prompt
 * plus n_k - 1 positions. If the longest ending does not fit n_ctx, the oldest shots
 * are dropped first, then the prompt is cut from the left (<|endoftext|> first).
 *
 * Nothing here knows about MPI: the caller chooses which records a process scores and
 * combines the results. */
#ifndef GPT_CHOICE_H
#define GPT_CHOICE_H

#include <stdint.h>

#include "model/infer.h"
#include "text/tokenizer.h"

typedef struct {
    int line;              /* 1-based line of the file */
    TokenVec context;      /* the context's tokens, trailing whitespace removed */
    int n_endings;         /* >= 2 */
    TokenVec *endings;     /* (n_endings) each ending's tokens, delimiter included, 1..n_ctx of them */
    int label;             /* the gold ending's index */
} ChoiceRecord;

typedef struct {
    char *path;
    int64_t n;
    ChoiceRecord *rec;     /* (n) in file order */
    int64_t n_endings;     /* the sum of the records' endings */
} ChoiceSet;

/* Reads and tokenizes a JSON Lines file (blank lines are skipped). NULL with gpt_error()
 * naming PATH:LINE and the field for a record that is not the layout above, has fewer
 * than 2 endings, an ending empty but for whitespace, a label out of range, or a
 * context or an ending of more than n_ctx tokens; and for a file with no record. */
ChoiceSet *choice_load(const char *path, Tokenizer *tok, int n_ctx);
void choice_free(ChoiceSet *s);

typedef struct {
    int shots;                /* K */
    const ChoiceSet *pool;    /* where the shots come from */
    int pool_is_data;         /* the pool is the evaluated set: record i is never its own shot */
    const int32_t *separator; /* the separator's tokens, after every shot */
    int n_separator;
    uint64_t seed;
    int n_ctx;
    int32_t eot;              /* <|endoftext|>, the prompt's first token */
} ChoicePromptOptions;

/* -1 with gpt_error() naming the pool's file if it cannot give K distinct shots. */
int choice_check_shots(const ChoicePromptOptions *o);

/* The pool records drawn as record i's shots, in prompt order (K of them, oldest first). */
void choice_draw_shots(const ChoicePromptOptions *o, int64_t i, int64_t *shots);

typedef struct {
    int shots_used;           /* K minus the shots dropped to fit n_ctx */
    int cut;                  /* prompt tokens cut from the left after every shot was dropped */
} ChoicePromptInfo;

/* Record r (index i of its set) as the prompt tokens into out (reset first). */
void choice_prompt(const ChoicePromptOptions *o, const ChoiceRecord *r, int64_t i, TokenVec *out,
                   ChoicePromptInfo *info);

/* Scratch of choice_score for a model. */
typedef struct {
    GPTCache *cache;
    float *logits;            /* (n_ctx + 1, V): after the prompt, then after each ending token */
    double *lp;               /* (n_ctx) */
    int32_t *batch;           /* (n_ctx) endings run together */
    int *batch_len;           /* (n_ctx) their lengths */
} ChoiceScorer;
ChoiceScorer *choice_scorer_create(const GPTConfig *cfg);
void choice_scorer_free(ChoiceScorer *s);

/* The summed log-probability of every ending of r after prompt[0..n) into sum[k]
 * (n >= 1; n + ending tokens - 1 <= n_ctx, as choice_prompt makes it). With
 * share_prompt the prompt runs once and the endings continue from its key/value cache,
 * together as branches (gpt_forward_branches); without, the prompt runs again for every
 * ending and then the ending alone (for comparison: the same numbers up to the rounding
 * of products over another number of rows). */
void choice_score(const GPT *m, ChoiceScorer *s, const int32_t *prompt, int n, const ChoiceRecord *r,
                  int share_prompt, double *sum);

/* The ending r prefers given its sums: the largest sum, or with per_token the largest
 * mean per token (the lowest index on ties). */
int choice_best(const ChoiceRecord *r, const double *sum, int per_token);

#endif
