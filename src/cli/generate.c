/* generate.c: `gpt generate` (sampling with the key/value cache) and `gpt score`
 * (the log-likelihood of a text), both on a model file that carries its tokenizer or
 * with --tokenizer. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/blas.h"
#include "files/model_file.h"
#include "cli/cli.h"
#include "model/infer.h"
#include "text/tokenizer.h"
#include "base/util.h"

int cli_load_lm(const char *model, const char *tok_path, Precision precision, GPT **m, Tokenizer **t) {
    *t = NULL;
    if (!(*m = model_file_load(model, 1, 0))) return -1;
    gpt_set_precision(*m, precision);
    if (!(*t = tokenizer_load(tok_path ? tok_path : model)))
        return tok_path ? -1 : gpt_error("%s has no tokenizer (/tokenizer); pass --tokenizer TOK.h5", model);
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

static const char gen_help[] =
    "usage: gpt generate --model FILE.h5 [--tokenizer TOK.h5] (--prompt TEXT | --prompt-file F)\n"
    "                    [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
    "                    [--seed S] [--num-samples M] [--ids] [--no-cache] [--threads T]\n"
    "                    [--precision fp32|bf16]\n\n"
    "Samples text one token at a time, each fed back, and streams it to standard output.\n"
    "Defaults: N 100, T 1 (0: greedy), K 0 (off), P 1 (off), S 1337, M 1. Stops at\n"
    "<|endoftext|> or after N tokens. An empty prompt starts from <|endoftext|>; a prompt\n"
    "longer than n_ctx is cut from the left. When the context is full, the last n_ctx/2\n"
    "tokens are kept and re-encoded. --ids prints each sample's token ids on a line instead\n"
    "of text. --no-cache runs a full forward pass over the context for every token (for\n"
    "comparison). FILE: a model file from gpt train carries its tokenizer. --precision bf16:\n"
    "products on bf16 operands, the key/value cache holds bf16 values (docs/precision.md).\n";

int cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 't'},
        {"prompt", required_argument, 0, 'p'}, {"prompt-file", required_argument, 0, 'f'},
        {"max-new-tokens", required_argument, 0, 'n'}, {"temperature", required_argument, 0, 'T'},
        {"top-k", required_argument, 0, 'k'}, {"top-p", required_argument, 0, 'P'},
        {"seed", required_argument, 0, 's'}, {"num-samples", required_argument, 0, 'M'},
        {"ids", no_argument, 0, 'i'}, {"no-cache", no_argument, 0, 'c'},
        {"threads", required_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, CLI_PRECISION_OPTION, {0, 0, 0, 0}};
    const char *model = NULL, *tok_path = NULL, *prompt = NULL, *prompt_file = NULL;
    Precision precision = PRECISION_FP32;
    int max_new = 100, samples = 1, ids_only = 0, no_cache = 0, threads = 1, opt;
    unsigned long long seed = 1337;
    SampleOptions so = {1.0f, 0, 1.0f};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 't': tok_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 'n': if (parse_int(optarg, &max_new) || max_new < 0) return cli_usage_error("generate", "--max-new-tokens: expected an integer >= 0, got '%s'", optarg); break;
        case 'T': if (parse_float(optarg, &so.temperature) || so.temperature < 0.0f) return cli_usage_error("generate", "--temperature: expected a number >= 0 (0: greedy), got '%s'", optarg); break;
        case 'k': if (parse_int(optarg, &so.top_k) || so.top_k < 0) return cli_usage_error("generate", "--top-k: expected an integer >= 0 (0: off), got '%s'", optarg); break;
        case 'P': if (parse_float(optarg, &so.top_p) || !(so.top_p > 0.0f && so.top_p <= 1.0f)) return cli_usage_error("generate", "--top-p: expected a number in (0, 1], got '%s'", optarg); break;
        case 's': if (parse_u64(optarg, &seed)) return cli_usage_error("generate", "--seed: expected a non-negative integer, got '%s'", optarg); break;
        case 'M': if (parse_int(optarg, &samples) || samples < 1) return cli_usage_error("generate", "--num-samples: expected a positive integer, got '%s'", optarg); break;
        case 'i': ids_only = 1; break;
        case 'c': no_cache = 1; break;
        case 'j': if (parse_int(optarg, &threads) || threads < 1) return cli_usage_error("generate", "--threads: expected a positive integer, got '%s'", optarg); break;
        case CLI_OPT_PRECISION: if (cli_precision("generate", optarg, &precision)) return 2; break;
        case 'h': fputs(gen_help, stdout); return 0;
        default: return cli_usage_error("generate", "unknown option");
        }
    }
    if (!model) return cli_usage_error("generate", "--model FILE.h5 is required");
    if (cli_precision_ready("generate", precision, 1)) return 2;
    size_t plen;
    uint8_t *ptext = text_arg("generate", prompt, prompt_file, "--prompt", "--prompt-file", &plen);
    if (!ptext) return 2;
    compute_threads_set(threads);
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

static const char score_help[] =
    "usage: gpt score --model FILE.h5 [--tokenizer TOK.h5] (--text TEXT | --file F) [--stride S]\n"
    "                 [--threads T] [--precision fp32|bf16] [--json]\n\n"
    "Log-likelihood of a text: the tokens x_1..x_n of the text, after x_0 = <|endoftext|>,\n"
    "each given the tokens before it within a window of n_ctx. Longer texts are scored\n"
    "with windows every S tokens (default n_ctx/2), each token once. Prints the total\n"
    "log-likelihood, the mean negative log-likelihood per token, the perplexity and the\n"
    "bits per byte of the text. --precision bf16: products on bf16 operands (docs/precision.md).\n";

int cmd_score(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 't'},
        {"text", required_argument, 0, 'x'}, {"file", required_argument, 0, 'f'},
        {"stride", required_argument, 0, 's'}, {"json", no_argument, 0, 'j'},
        {"threads", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'}, CLI_PRECISION_OPTION, {0, 0, 0, 0}};
    const char *model = NULL, *tok_path = NULL, *text = NULL, *file = NULL;
    Precision precision = PRECISION_FP32;
    int stride = 0, json = 0, threads = 1, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 't': tok_path = optarg; break;
        case 'x': text = optarg; break;
        case 'f': file = optarg; break;
        case 's': if (parse_int(optarg, &stride) || stride < 1) return cli_usage_error("score", "--stride: expected a positive integer, got '%s'", optarg); break;
        case 'j': json = 1; break;
        case 'T': if (parse_int(optarg, &threads) || threads < 1) return cli_usage_error("score", "--threads: expected a positive integer, got '%s'", optarg); break;
        case CLI_OPT_PRECISION: if (cli_precision("score", optarg, &precision)) return 2; break;
        case 'h': fputs(score_help, stdout); return 0;
        default: return cli_usage_error("score", "unknown option");
        }
    }
    if (!model) return cli_usage_error("score", "--model FILE.h5 is required");
    if (cli_precision_ready("score", precision, !json)) return 2;
    compute_threads_set(threads);
    size_t blen;
    uint8_t *bytes = text_arg("score", text, file, "--text", "--file", &blen);
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
