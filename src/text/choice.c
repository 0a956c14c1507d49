/* choice.c: multiple-choice records, few-shot prompts and the scoring of endings from a
 * shared prompt (see choice.h). */
#include "text/choice.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonl.h"
#include "base/util.h"
#include "cpu/kernels.h"

/* ---- records ---- */

#define LAYOUT "{\"context\": \"...\", \"endings\": [\"...\", ...], \"label\": i}"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

typedef struct {
    const char *path;
    size_t line;
    Tokenizer *tok;
    int n_ctx;
    char *buf;          /* an ending with the whitespace moved to it */
    size_t cap;
} Loader;

static int encode(Loader *L, const char *text, size_t len, TokenVec *out) {
    return tokenizer_encode(L->tok, (const uint8_t *)text, len, 0, out);
}

static int too_long(const Loader *L, const char *field, int index, size_t n) {
    char where[64] = "";
    if (index >= 0) snprintf(where, sizeof where, "[%d]", index);
    return jsonl_error(L->path, L->line, "field \"%s\"%s has %zu tokens, more than n_ctx = %d", field, where, n,
                       L->n_ctx);
}

/* The context without its trailing whitespace, and that whitespace (moved to the endings). */
static int read_context(Loader *L, json_t *obj, ChoiceRecord *r, const char **ws, size_t *n_ws) {
    json_t *c = json_object_get(obj, "context"), *ctx = json_object_get(obj, "ctx");
    const char *field = c ? "context" : "ctx";
    if (c && ctx) return jsonl_error(L->path, L->line, "both \"context\" and \"ctx\" are given; expected one");
    if (!c) c = ctx;
    if (!c) return jsonl_error(L->path, L->line, "field \"context\" is missing (expected " LAYOUT ")");
    if (!json_is_string(c)) return jsonl_error(L->path, L->line, "field \"%s\" is not a string", field);
    const char *s = json_string_value(c);
    size_t len = json_string_length(c), keep = len;
    while (keep > 0 && is_space(s[keep - 1])) keep--;
    *ws = s + keep, *n_ws = len - keep;
    if (encode(L, s, keep, &r->context)) return -1;
    return r->context.n > (size_t)L->n_ctx ? too_long(L, field, -1, r->context.n) : 0;
}

static int read_endings(Loader *L, json_t *obj, ChoiceRecord *r, const char *ws, size_t n_ws) {
    json_t *e = json_object_get(obj, "endings");
    if (!e) return jsonl_error(L->path, L->line, "field \"endings\" is missing");
    if (!json_is_array(e) || json_array_size(e) < 2)
        return jsonl_error(L->path, L->line, "field \"endings\" is not an array of at least 2 strings");
    r->n_endings = (int)json_array_size(e);
    r->endings = xcalloc((size_t)r->n_endings, sizeof *r->endings);
    for (int k = 0; k < r->n_endings; k++) {
        json_t *s = json_array_get(e, (size_t)k);
        if (!json_is_string(s)) return jsonl_error(L->path, L->line, "field \"endings\"[%d] is not a string", k);
        const char *text = json_string_value(s);
        size_t len = json_string_length(s), blank = 0;
        while (blank < len && is_space(text[blank])) blank++;
        if (blank == len) return jsonl_error(L->path, L->line, "field \"endings\"[%d] is empty", k);
        /* the delimiter: the context's trailing whitespace, or one space between words */
        int space = !n_ws && blank == 0 && r->context.n > 0;
        size_t n = n_ws + (size_t)space + len;
        if (n > L->cap) L->buf = xrealloc(L->buf, L->cap = 2 * n);
        memcpy(L->buf, ws, n_ws);
        if (space) L->buf[n_ws] = ' ';
        memcpy(L->buf + n_ws + space, text, len);
        if (encode(L, L->buf, n, &r->endings[k])) return -1;
        if (r->endings[k].n > (size_t)L->n_ctx) return too_long(L, "endings", k, r->endings[k].n);
    }
    return 0;
}

static int read_label(Loader *L, json_t *obj, ChoiceRecord *r) {
    json_t *l = json_object_get(obj, "label");
    if (!l) return jsonl_error(L->path, L->line, "field \"label\" is missing");
    if (!json_is_integer(l))
        return jsonl_error(L->path, L->line, "field \"label\" is not an integer (the index of the right ending)");
    json_int_t v = json_integer_value(l);
    if (v < 0 || v >= r->n_endings)
        return jsonl_error(L->path, L->line, "field \"label\" is %lld, outside 0..%d (the record has %d endings)",
                         (long long)v, r->n_endings - 1, r->n_endings);
    r->label = (int)v;
    return 0;
}

static int read_record(Loader *L, json_t *obj, ChoiceRecord *r) {
    const char *ws = "";
    size_t n_ws = 0;
    r->line = (int)L->line;
    return read_context(L, obj, r, &ws, &n_ws) || read_endings(L, obj, r, ws, n_ws) || read_label(L, obj, r) ? -1 : 0;
}

static void record_free(ChoiceRecord *r) {
    free(r->context.ids);
    for (int k = 0; k < r->n_endings; k++) free(r->endings[k].ids);
    free(r->endings);
}

ChoiceSet *choice_load(const char *path, Tokenizer *tok, int n_ctx) {
    JsonlReader *in = jsonl_open(path, "a JSON object " LAYOUT, 0);
    if (!in) return NULL;
    ChoiceSet *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(path);
    Loader L = {.path = path, .tok = tok, .n_ctx = n_ctx};
    size_t cap = 0;
    json_t *obj;
    int rc;
    while ((rc = jsonl_next(in, &obj)) > 0) {
        if (s->n == (int64_t)cap) s->rec = xrealloc(s->rec, (cap = cap ? 2 * cap : 64) * sizeof *s->rec);
        ChoiceRecord *r = &s->rec[s->n++];
        *r = (ChoiceRecord){0};
        L.line = jsonl_line(in);
        rc = read_record(&L, obj, r);
        s->n_endings += r->n_endings;
        json_decref(obj);
        if (rc) break;
    }
    if (!rc && s->n == 0) rc = gpt_error("%s: holds no record (expected JSON Lines of {\"context\", \"endings\", \"label\"})", path);
    jsonl_close(in);
    free(L.buf);
    if (rc) {
        choice_free(s);
        return NULL;
    }
    return s;
}

void choice_free(ChoiceSet *s) {
    if (!s) return;
    for (int64_t i = 0; i < s->n; i++) record_free(&s->rec[i]);
    free(s->rec);
    free(s->path);
    free(s);
}

/* ---- prompts ---- */

static int64_t pool_choices(const ChoicePromptOptions *o) { return o->pool->n - (o->pool_is_data ? 1 : 0); }

int choice_check_shots(const ChoicePromptOptions *o) {
    if (o->shots <= pool_choices(o)) return 0;
    return gpt_error("%s: --shots %d, but the shot pool has %lld records%s", o->pool->path, o->shots,
                     (long long)o->pool->n, o->pool_is_data ? " and a record is never its own shot" : "");
}

/* Uniform in [0, n). */
static int64_t below(Rng *r, int64_t n) { return (int64_t)(((unsigned __int128)rng_next(r) * (uint64_t)n) >> 64); }

void choice_draw_shots(const ChoicePromptOptions *o, int64_t i, int64_t *shots) {
    Rng rng;
    rng_seed(&rng, rng_key(o->seed, (uint64_t)i));
    int64_t n = pool_choices(o);
    int K = o->shots;
    /* Floyd's sample of K distinct indices of [0, n), then shuffled: O(K^2), not O(n) */
    for (int k = 0; k < K; k++) {
        int64_t j = n - K + k, t = below(&rng, j + 1);
        for (int q = 0; q < k; q++)
            if (shots[q] == t) {
                t = j;
                break;
            }
        shots[k] = t;
    }
    for (int k = K - 1; k > 0; k--) {
        int q = (int)below(&rng, k + 1);
        int64_t x = shots[k];
        shots[k] = shots[q], shots[q] = x;
    }
    if (o->pool_is_data)
        for (int k = 0; k < K; k++) shots[k] += shots[k] >= i; /* skip record i */
}

static size_t shot_len(const ChoicePromptOptions *o, const ChoiceRecord *s) {
    return s->context.n + s->endings[s->label].n + (size_t)o->n_separator;
}

static void append(TokenVec *out, const int32_t *ids, size_t n) {
    for (size_t j = 0; j < n; j++) tokvec_push(out, ids[j]);
}

void choice_prompt(const ChoicePromptOptions *o, const ChoiceRecord *r, int64_t i, TokenVec *out,
                   ChoicePromptInfo *info) {
    int64_t *shots = xmalloc(sizeof *shots * (size_t)(o->shots > 0 ? o->shots : 1));
    choice_draw_shots(o, i, shots);
    size_t longest = 0;
    for (int k = 0; k < r->n_endings; k++) longest = r->endings[k].n > longest ? r->endings[k].n : longest;
    size_t budget = (size_t)o->n_ctx + 1 - longest; /* the prompt and every ending but its last token fit n_ctx */
    size_t len = 1 + r->context.n;
    for (int k = 0; k < o->shots; k++) len += shot_len(o, &o->pool->rec[shots[k]]);
    int first = 0; /* the oldest shot kept */
    while (len > budget && first < o->shots) len -= shot_len(o, &o->pool->rec[shots[first++]]);
    info->shots_used = o->shots - first;
    info->cut = len > budget ? (int)(len - budget) : 0;
    out->n = 0;
    tokvec_push(out, o->eot);
    for (int k = first; k < o->shots; k++) {
        const ChoiceRecord *s = &o->pool->rec[shots[k]];
        append(out, s->context.ids, s->context.n);
        append(out, s->endings[s->label].ids, s->endings[s->label].n);
        append(out, o->separator, (size_t)o->n_separator);
    }
    append(out, r->context.ids, r->context.n);
    if (info->cut) {
        memmove(out->ids, out->ids + info->cut, (out->n - (size_t)info->cut) * sizeof *out->ids);
        out->n -= (size_t)info->cut;
    }
    free(shots);
}

/* ---- scoring ---- */

ChoiceScorer *choice_scorer_create(const GPTConfig *cfg) {
    ChoiceScorer *s = xcalloc(1, sizeof *s);
    s->cache = cache_create(cfg);
    s->logits = xalloc_floats((size_t)(cfg->n_ctx + 1) * cfg->vocab_size);
    s->lp = xmalloc(sizeof *s->lp * (size_t)cfg->n_ctx);
    s->batch = xmalloc(sizeof *s->batch * (size_t)cfg->n_ctx);
    s->batch_len = xmalloc(sizeof *s->batch_len * (size_t)cfg->n_ctx);
    return s;
}

void choice_scorer_free(ChoiceScorer *s) {
    if (!s) return;
    cache_free(s->cache);
    free(s->logits);
    free(s->lp);
    free(s->batch);
    free(s->batch_len);
    free(s);
}

/* The sum of log p(e_j) of an ending: e_0 from the prompt's last logits, e_j from the
 * logits of the ending's row j - 1. Added in order, for any number of threads. */
static double ending_sum(ChoiceScorer *s, int V, const float *last, const float *rows, const int32_t *e, int len) {
    s->lp[0] = logprob_of(last, V, e[0]);
#pragma omp parallel for schedule(static)
    for (int j = 1; j < len; j++) s->lp[j] = logprob_of(rows + (size_t)(j - 1) * V, V, e[j]);
    double sum = 0.0;
    for (int j = 0; j < len; j++) sum += s->lp[j];
    return sum;
}

void choice_score(const GPT *m, ChoiceScorer *s, const int32_t *prompt, int n, const ChoiceRecord *r,
                  int share_prompt, double *sum) {
    int V = m->cfg.vocab_size, cap = m->cfg.n_ctx;
    float *last = s->logits, *rows = s->logits + V; /* after the prompt; after each ending token */
    if (!share_prompt) {
        for (int k = 0; k < r->n_endings; k++) {
            int len = (int)r->endings[k].n;
            cache_reset(s->cache);
            gpt_forward_cached(m, s->cache, prompt, n, last, NULL);
            if (len > 1) gpt_forward_cached(m, s->cache, r->endings[k].ids, len - 1, NULL, rows);
            sum[k] = ending_sum(s, V, last, rows, r->endings[k].ids, len);
        }
        return;
    }
    cache_reset(s->cache);
    gpt_forward_cached(m, s->cache, prompt, n, last, NULL);
    /* the endings as branches of the prompt, as many at once as n_ctx rows hold (each
     * ending but its last token: that one is only predicted) */
    for (int k0 = 0, k1; k0 < r->n_endings; k0 = k1) {
        int n_rows = 0, nb = 0;
        for (k1 = k0; k1 < r->n_endings && n_rows + (int)r->endings[k1].n - 1 <= cap; k1++) {
            int len = (int)r->endings[k1].n - 1;
            if (len == 0) continue;
            memcpy(s->batch + n_rows, r->endings[k1].ids, (size_t)len * sizeof *s->batch);
            s->batch_len[nb++] = len;
            n_rows += len;
        }
        if (nb) gpt_forward_branches(m, s->cache, s->batch, s->batch_len, nb, rows);
        for (int k = k0, row = 0; k < k1; k++) {
            int len = (int)r->endings[k].n;
            sum[k] = ending_sum(s, V, last, rows + (size_t)row * V, r->endings[k].ids, len);
            row += len - 1;
        }
    }
}

int choice_best(const ChoiceRecord *r, const double *sum, int per_token) {
    int best = 0;
    double top = 0.0;
    for (int k = 0; k < r->n_endings; k++) {
        double x = per_token ? sum[k] / (double)r->endings[k].n : sum[k];
        if (k == 0 || x > top) best = k, top = x;
    }
    return best;
}
