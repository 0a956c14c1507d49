/* eval.h: the validation loss of a language model on corpora: pre-training's
 * --eval-every (train.h), gpt finetune's on corpora (continued pre-training) and gpt
 * eval's on a corpus (cli/train.c).
 *
 * Window k of a split is its tokens [k T, k T + T]: the first T are the inputs, the last
 * T the targets. The first n_windows windows are evaluated, without dropout. */
#ifndef GPT_EVAL_H
#define GPT_EVAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "files/data.h"
#include "model/model.h"

/* Not collective: window k of a split into in (T) and tgt (T; NULL: not wanted), through
 * buf (T + 1); also pre-training's reading of its steps, so that both cut windows alike.
 * -1 with the corpus's message. */
int eval_read_window(Corpus *c, int split, int64_t k, int T, int32_t *buf, int *in, int *tgt);
/* Collective: the summed NLL and the number of tokens over the first n_windows windows
 * of a split, window w evaluated by rank w mod P in batches of the model's max_batch. */
int eval_windows(GPT *m, Corpus *c, int split, int64_t n_windows, double *nll_sum, int64_t *tokens);
/* Collective: eval_windows on each corpus of a blend (its first n_windows[c] windows):
 * loss[c] and the blend's weighted mean loss[b->n]; nll_sum[c], tokens[c]. */
int eval_blend(GPT *m, const Blend *b, int split, const int64_t *n_windows, double *loss, double *nll_sum,
               int64_t *tokens);
/* A blend's validation losses (eval_blend's) into a metrics line: val_loss, and for
 * more than one corpus val_losses {PATH: loss}; the progress text "LABEL 3.1234 (PATH
 * 3.0123, ...)" into summary. */
void eval_blend_report(const Blend *b, const double *loss, const char *label, json_t *line, char *summary,
                       size_t size);

#endif
