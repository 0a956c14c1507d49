/* eval.c: a language model's loss on corpus windows (see eval.h). Window w goes to
 * rank w mod P, each rank runs its windows in batches of the model's max_batch, and one
 * allreduce sums the NLL and the token count, so the result does not depend on P. */
#include "run/eval.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "dist/dist.h"

int eval_read_window(Corpus *c, int split, int64_t k, int T, int32_t *buf, int *in, int *tgt) {
    if (corpus_read(c, split, k * T, T + 1, buf)) return -1;
    for (int t = 0; t < T; t++) in[t] = buf[t];
    for (int t = 0; tgt && t < T; t++) tgt[t] = buf[t + 1];
    return 0;
}

int eval_windows(GPT *m, Corpus *c, int split, int64_t n_windows, double *nll_sum, int64_t *tokens) {
    int rank = dist_rank(), P = dist_size(), T = m->cfg.n_ctx, B = m->max_batch;
    int32_t *buf = xmalloc(sizeof(int32_t) * (size_t)(T + 1));
    int *in = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    double sums[2] = {0.0, 0.0}; /* NLL, tokens */
    int rc = 0, b = 0;
    for (int64_t w = rank; !rc && w < n_windows; w += P) {
        rc = eval_read_window(c, split, w, T, buf, in + (size_t)b * T, tgt + (size_t)b * T);
        if (!rc && (++b == B || w + P >= n_windows)) { /* a full batch, or this rank's last window */
            sums[0] += gpt_loss(m, in, tgt, b, T) * b * T;
            sums[1] += (double)b * T;
            b = 0;
        }
    }
    free(buf);
    free(in);
    free(tgt);
    if (dist_agree(rc)) return -1;
    dist_sum(sums, 2);
    *nll_sum = sums[0];
    *tokens = (int64_t)sums[1];
    return 0;
}

int eval_blend(GPT *m, const Blend *b, int split, const int64_t *n_windows, double *loss, double *nll_sum,
               int64_t *tokens) {
    double mean = 0.0;
    for (int c = 0; c < b->n; c++) {
        if (eval_windows(m, b->corpus[c], split, n_windows[c], &nll_sum[c], &tokens[c])) return -1;
        loss[c] = nll_sum[c] / (double)tokens[c];
        mean += b->weight[c] * loss[c];
    }
    loss[b->n] = mean;
    return 0;
}

void eval_blend_report(const Blend *b, const double *loss, const char *label, json_t *line, char *summary,
                       size_t size) {
    json_object_set_new(line, "val_loss", json_real_or_null(loss[b->n]));
    int len = snprintf(summary, size, "%s %.4f", label, loss[b->n]);
    if (b->n > 1) {
        json_t *each = json_object();
        for (int c = 0; c < b->n; c++) {
            json_object_set_new(each, b->path[c], json_real_or_null(loss[c]));
            if (len >= 0 && (size_t)len < size)
                len += snprintf(summary + len, size - (size_t)len, "%s%s %.4f%s", c ? ", " : " (", b->path[c], loss[c],
                                c == b->n - 1 ? ")" : "");
        }
        json_object_set_new(line, "val_losses", each);
    }
}
