/* generate.c: `gpt generate` (sampling with the key/value cache) and `gpt score`
 * (the log-likelihood of a text), both on a model file that carries its tokenizer or
 * with --tokenizer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/cli.h"
#include "cpu/threads.h"
#include "files/model_file.h"
#include "model/infer.h"
#include "text/tokenizer.h"

int cli_load_lm(const char *model, const char *tok_path, Precision precision, GPT **m, Tokenizer **t) {
    *t = NULL;
    if (!(*m = model_file_load(model, 1, 0))) return -1;
    gpt_set_precision(*m, precision);
    if (!(*t = tokenizer_load(tok_path ? tok_path : model)))
        return tok_path ? -1 : gpt_error("%s has no tokenizer (/tokenizer); pass --tokenizer TOK.h5", model);
    char why[256];
    int same = tok_path ? model_file_same_tokenizer(model, *t, why, sizeof why) : 1;
    if (same <= 0) /* the model was trained on its own tokenizer's ids: another would feed it nonsense */
        return same < 0 ? -1
                        : gpt_error("--tokenizer %s is not the tokenizer %s carries (%s); leave --tokenizer out", tok_path,
                                    model, why);
    if (tokenizer_vocab_size(*t) > (*m)->cfg.vocab_size)
        return gpt_error("the tokenizer's vocabulary (%d) is larger than the model's (%d)", tokenizer_vocab_size(*t),
                         (*m)->cfg.vocab_size);
    if (tokenizer_special_id(*t, TOK_EOT) < 0) return gpt_error("the tokenizer has no %s token", TOK_EOT);
    return 0;
}

/* The text of --prompt/--text or of a file; NULL with a message if neither or both. */
static uint8_t *text_arg(const char *cmd, const char *text, const char *file, const char *text_flag,
                         const char *file_flag, size_t *len) {
    if (!text == !file) {
        cli_usage_error(cmd, "give one of %s TEXT or %s FILE", text_flag, file_flag);
        return NULL;
    }
    if (text) {
        *len = strlen(text);
        return (uint8_t *)xstrdup(text);
    }
    uint8_t *buf = read_file(file, len);
    if (!buf) cli_fail(cmd);
    return buf;
}

/* Writes bytes as they become whole UTF-8 characters: a character split across tokens
 * is printed once its last byte has arrived. */
typedef struct {
    uint8_t pending[4];
    int n;
} Utf8Out;

static void utf8_write(Utf8Out *o, const uint8_t *b, size_t len) {
    for (size_t i = 0; i < len; i++) {
        o->pending[o->n++] = b[i];
        uint8_t lead = o->pending[0];
        int need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        int broken = o->n > 1 && (o->pending[o->n - 1] & 0xC0) != 0x80; /* not a continuation: emit as is */
        if (o->n >= need || broken || o->n == 4) {
            fwrite(o->pending, 1, (size_t)o->n, stdout);
            o->n = 0;
        }
    }
    fflush(stdout);
}

/* The options generate and score share. */
typedef struct {
    const char *model, *tok_path;
    int threads;
    Precision precision;
} LmArgs;

static const CliOpt lm_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(LmArgs, model), .flags = CLI_REQUIRED,
     .metavar = "FILE.h5", .help = "a model file (from gpt train it carries its tokenizer)"},
    {.name = "tokenizer", .kind = CLI_STRING, .offset = offsetof(LmArgs, tok_path), .metavar = "TOK.h5",
     .help = "the tokenizer, for a model file that carries none (one it carries must be this one)"},
    CLI_THREADS_ROW(offsetof(LmArgs, threads)),
    {.kind = CLI_GROUP, .group = cli_precision_opts, .offset = offsetof(LmArgs, precision)},
    CLI_END};

typedef struct {
    LmArgs lm;
    const char *prompt, *prompt_file;
    int max_new, samples, ids_only, no_cache;
    uint64_t seed;
    SampleOptions so;
} GenerateArgs;

#define G(field) offsetof(GenerateArgs, field)

static const CliOpt generate_opts[] = {
    {.kind = CLI_GROUP, .group = lm_opts, .offset = G(lm)},
    {.name = "prompt", .kind = CLI_STRING, .offset = G(prompt), .metavar = "TEXT", .help = "the text to continue"},
    {.name = "prompt-file", .kind = CLI_STRING, .offset = G(prompt_file), .metavar = "F",
     .help = "the text to continue, from a file"},
    {.name = "max-new-tokens", .kind = CLI_INT, .offset = G(max_new), .flags = CLI_MIN, .metavar = "N",
     .help = "tokens a sample at most"},
    {.name = "temperature", .kind = CLI_FLOAT, .offset = G(so.temperature), .flags = CLI_MIN, .metavar = "T",
     .help = "of the sampling (0: greedy)"},
    {.name = "top-k", .kind = CLI_INT, .offset = G(so.top_k), .flags = CLI_MIN, .metavar = "K",
     .help = "sample among the K likeliest tokens (0: off)"},
    {.name = "top-p", .kind = CLI_FLOAT, .offset = G(so.top_p), .flags = CLI_MIN | CLI_MIN_OPEN | CLI_MAX, .max = 1,
     .metavar = "P", .help = "sample among the likeliest tokens up to this mass (1: off)"},
    {.name = "seed", .kind = CLI_U64, .offset = G(seed), .metavar = "S", .help = "of the sampling"},
    {.name = "num-samples", .kind = CLI_INT, .offset = G(samples), .flags = CLI_MIN, .min = 1, .metavar = "M",
     .help = "samples, each from the prompt"},
    {.name = "ids", .kind = CLI_FLAG, .offset = G(ids_only), .help = "print each sample's token ids on a line"},
    {.name = "no-cache", .kind = CLI_FLAG, .offset = G(no_cache),
     .help = "run a full forward pass over the context for every token (for comparison)"},
    CLI_END};

static const CliCommand generate_cmd = {
    .name = "generate", .opts = generate_opts, .size = sizeof(GenerateArgs),
    .about = "Samples text one token at a time, each fed back, and streams it to standard output;\n"
             "give --prompt or --prompt-file. Stops at <|endoftext|> or after N tokens. An empty\n"
             "prompt starts from <|endoftext|>; a prompt longer than n_ctx is cut from the left. When\n"
             "the context is full, the last n_ctx/2 tokens are kept and re-encoded. --precision bf16:\n"
             "the key/value cache holds bf16 values too (docs/precision.md).\n"};

int cmd_generate(int argc, char **argv) {
    GenerateArgs a = {.max_new = 100, .samples = 1, .seed = 1337, .so = {1.0f, 0, 1.0f}};
    int first, rc = cli_parse(&generate_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *model = a.lm.model, *tok_path = a.lm.tok_path;
    Precision precision = a.lm.precision;
    int max_new = a.max_new, samples = a.samples, ids_only = a.ids_only, no_cache = a.no_cache;
    uint64_t seed = a.seed;
    SampleOptions so = a.so;
    if (cli_precision_ready("generate", precision, 1)) return 2;
    size_t plen;
    uint8_t *ptext = text_arg("generate", a.prompt, a.prompt_file, "--prompt", "--prompt-file", &plen);
    if (!ptext) return 2;
    compute_threads_setup(a.lm.threads, NULL, 0);
    GPT *m;
    Tokenizer *t;
    if (cli_load_lm(model, tok_path, precision, &m, &t)) return free(ptext), cli_fail("generate");
    int n_ctx = m->cfg.n_ctx, V = m->cfg.vocab_size, eot = tokenizer_special_id(t, TOK_EOT);
    TokenVec ctx = {0};
    if (tokenizer_encode(t, ptext, plen, 0, &ctx)) return cli_fail("generate");
    if (ctx.n == 0) tokvec_push(&ctx, eot);
    if (ctx.n > (size_t)n_ctx) {
        fprintf(stderr, "gpt generate: the prompt has %zu tokens; keeping its last %d (n_ctx)\n", ctx.n, n_ctx);
        memmove(ctx.ids, ctx.ids + ctx.n - n_ctx, (size_t)n_ctx * sizeof *ctx.ids);
        ctx.n = (size_t)n_ctx;
    }
    size_t prompt_n = ctx.n;
    GPTCache *kv = cache_create(&m->cfg);
    float *logits = xalloc_floats((size_t)V);
    double t0 = now_seconds();
    long produced = 0;
    for (int s = 0; s < samples; s++) {
        Rng rng;
        rng_seed(&rng, rng_key(seed, (uint64_t)s));
        ctx.n = prompt_n;
        size_t start = 0; /* the context is ctx.ids[start .. ctx.n) */
        cache_reset(kv);
        gpt_forward_cached(m, kv, ctx.ids, (int)ctx.n, logits, NULL);
        Utf8Out out = {{0}, 0};
        if (samples > 1 && !ids_only) printf("%s--- sample %d ---\n", s ? "\n" : "", s + 1);
        for (int i = 0; i < max_new; i++) {
            int tok = sample_token(logits, V, &so, &rng);
            if (tok == eot) break;
            size_t len;
            const uint8_t *b = tokenizer_token_bytes(t, tok, &len);
            if (ids_only) printf(i ? " %d" : "%d", tok);
            else if (b) utf8_write(&out, b, len);
            tokvec_push(&ctx, tok);
            produced++;
            if (i + 1 == max_new) break;
            int slide = ctx.n - start > (size_t)n_ctx; /* the context is full: keep its last half */
            if (slide) start = ctx.n - (size_t)(n_ctx / 2);
            if (slide || no_cache) { /* re-encode the context in one pass */
                cache_reset(kv);
                gpt_forward_cached(m, kv, ctx.ids + start, (int)(ctx.n - start), logits, NULL);
            } else {
                gpt_forward_cached(m, kv, &ctx.ids[ctx.n - 1], 1, logits, NULL);
            }
        }
        if (!ids_only && out.n) fwrite(out.pending, 1, (size_t)out.n, stdout);
        putchar('\n');
        fflush(stdout);
    }
    double secs = now_seconds() - t0;
    fprintf(stderr, "gpt generate: %ld tokens in %.2f s (%.1f tokens/s%s)\n", produced, secs,
            produced / (secs > 0 ? secs : 1), no_cache ? ", no cache" : "");
    free(logits);
    free(ctx.ids);
    free(ptext);
    cache_free(kv);
    tokenizer_free(t);
    gpt_free(m);
    return 0;
}

typedef struct {
    LmArgs lm;
    const char *text, *file;
    int stride, json;
} ScoreArgs;

static const CliOpt score_opts[] = {
    {.kind = CLI_GROUP, .group = lm_opts, .offset = offsetof(ScoreArgs, lm)},
    {.name = "text", .kind = CLI_STRING, .offset = offsetof(ScoreArgs, text), .metavar = "TEXT",
     .help = "the text scored"},
    {.name = "file", .kind = CLI_STRING, .offset = offsetof(ScoreArgs, file), .metavar = "F",
     .help = "the text scored, from a file"},
    {.name = "stride", .kind = CLI_INT, .offset = offsetof(ScoreArgs, stride), .flags = CLI_MIN, .min = 1,
     .metavar = "S", .help = "tokens between the windows of a longer text", .dflt = "n_ctx/2"},
    {.name = "json", .kind = CLI_FLAG, .offset = offsetof(ScoreArgs, json), .help = "print one JSON object"},
    CLI_END};

static const CliCommand score_cmd = {
    .name = "score", .opts = score_opts, .size = sizeof(ScoreArgs),
    .about = "Log-likelihood of a text (--text or --file): the tokens x_1..x_n of the text, after\n"
             "x_0 = <|endoftext|>, each given the tokens before it within a window of n_ctx. Longer\n"
             "texts are scored with windows every S tokens, each token once. Prints the total\n"
             "log-likelihood, the mean negative log-likelihood per token, the perplexity and the\n"
             "bits per byte of the text.\n"};

int cmd_score(int argc, char **argv) {
    ScoreArgs a = {0};
    int first, rc = cli_parse(&score_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *model = a.lm.model, *tok_path = a.lm.tok_path;
    Precision precision = a.lm.precision;
    int stride = a.stride, json = a.json;
    if (cli_precision_ready("score", precision, !json)) return 2;
    compute_threads_setup(a.lm.threads, NULL, 0);
    size_t blen;
    uint8_t *bytes = text_arg("score", a.text, a.file, "--text", "--file", &blen);
    if (!bytes) return 2;
    if (blen == 0) return free(bytes), cli_usage_error("score", "the text is empty");
    GPT *m;
    Tokenizer *t;
    if (cli_load_lm(model, tok_path, precision, &m, &t)) return free(bytes), cli_fail("score");
    int n_ctx = m->cfg.n_ctx, V = m->cfg.vocab_size;
    if (!stride) stride = n_ctx / 2 > 0 ? n_ctx / 2 : 1;
    if (stride > n_ctx) return cli_usage_error("score", "--stride %d is larger than n_ctx %d", stride, n_ctx);
    TokenVec x = {0};
    tokvec_push(&x, tokenizer_special_id(t, TOK_EOT));
    if (tokenizer_encode(t, bytes, blen, 0, &x)) return cli_fail("score");
    long n = (long)x.n - 1, prev_end = 0, windows = 0;
    GPTCache *kv = cache_create(&m->cfg);
    float *logits = xalloc_floats((size_t)n_ctx * V);
    double ll = 0.0, *lp = xmalloc((size_t)n_ctx * sizeof *lp);
    for (long begin = 0;; begin += stride) {
        long end = begin + n_ctx < n ? begin + n_ctx : n; /* predicts x[begin+1 .. end] */
        cache_reset(kv);
        gpt_forward_cached(m, kv, x.ids + begin, (int)(end - begin), NULL, logits);
        /* each token once; the log-probabilities are added in order, for any --threads */
#pragma omp parallel for schedule(static)
        for (long j = prev_end + 1; j <= end; j++)
            lp[j - prev_end - 1] = logprob_of(logits + (size_t)(j - 1 - begin) * V, V, x.ids[j]);
        for (long j = prev_end + 1; j <= end; j++) ll += lp[j - prev_end - 1];
        prev_end = end;
        windows++;
        if (end == n) break;
    }
    double nll = -ll / (double)n, bpb = -ll / log(2.0) / (double)blen;
    if (json)
        cli_print_json(json_pack("{s:o,s:I,s:o,s:o,s:I,s:o,s:I,s:i}", "log_likelihood", json_real_or_null(ll), "tokens",
                                 (json_int_t)n, "nll_per_token", json_real_or_null(nll), "perplexity",
                                 json_real_or_null(exp(nll)), "bytes", (json_int_t)blen, "bits_per_byte",
                                 json_real_or_null(bpb), "windows", (json_int_t)windows, "stride", stride));
    else
        printf("log-likelihood %.4f over %ld tokens (%zu bytes): %.4f nats per token, perplexity %.2f, %.4f bits "
               "per byte (%ld window(s), stride %d)\n",
               ll, n, blen, nll, exp(nll), bpb, windows, stride);
    free(logits);
    free(lp);
    free(x.ids);
    free(bytes);
    cache_free(kv);
    tokenizer_free(t);
    gpt_free(m);
    return 0;
}
