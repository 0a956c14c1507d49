/* tokenizer.c: `gpt tokenizer train|import`, `gpt tokenize`, `gpt detokenize`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hashmap.h"
#include "base/util.h"
#include "cli/cli.h"
#include "files/tokenizer_file.h"
#include "text/bpe_train.h"

static const char help_tokenizer[] =
    "usage: gpt tokenizer train [OPTIONS] FILES...\n"
    "       gpt tokenizer import [OPTIONS]\n\n"
    "train learns a byte-level BPE from text files; import reads GPT-2's or Hugging Face's.\n"
    "gpt tokenizer train --help and gpt tokenizer import --help list their options.\n";

/* Distinct pieces and their counts, for training. */
typedef struct {
    HashMap index;  /* hash of piece -> word number */
    BpeWord *words;
    size_t n, cap;
    uint8_t **arenas; /* piece bytes, in blocks that never move */
    size_t n_arenas, arena_used;
} WordCounts;

#define ARENA_BYTES (1 << 20)

static const uint8_t *store_piece(WordCounts *wc, const uint8_t *p, size_t n) {
    if (!wc->n_arenas || wc->arena_used + n > ARENA_BYTES) {
        wc->arenas = xrealloc(wc->arenas, (wc->n_arenas + 1) * sizeof *wc->arenas);
        wc->arenas[wc->n_arenas++] = xmalloc(n > ARENA_BYTES ? n : ARENA_BYTES);
        wc->arena_used = 0;
    }
    uint8_t *dst = wc->arenas[wc->n_arenas - 1] + wc->arena_used;
    memcpy(dst, p, n);
    wc->arena_used += n;
    return dst;
}

static void count_piece(const uint8_t *p, size_t n, void *ctx) {
    WordCounts *wc = ctx;
    uint64_t h = hash_bytes(p, n);
    for (int64_t *s = hm_get(&wc->index, h); s; s = hm_get_next(&wc->index, h, s)) {
        BpeWord *w = &wc->words[*s];
        if (w->len == n && !memcmp(w->bytes, p, n)) {
            w->count++;
            return;
        }
    }
    if (wc->n == wc->cap) wc->words = xrealloc(wc->words, (wc->cap = wc->cap ? 2 * wc->cap : 4096) * sizeof *wc->words);
    wc->words[wc->n] = (BpeWord){store_piece(wc, p, n), n, 1};
    hm_put_dup(&wc->index, h, (int64_t)wc->n++);
}

/* Whole lines, not carriage returns: training usually runs into a log file. */
static void print_progress(int done, int total, void *ctx) {
    fprintf(stderr, "merges %d/%d (%.1f s)\n", done, total, now_seconds() - *(double *)ctx);
}

typedef struct {
    int merges;
    const char *out;
} TrainArgs;

static const CliOpt train_opts[] = {
    {.name = "merges", .kind = CLI_INT, .offset = offsetof(TrainArgs, merges), .flags = CLI_REQUIRED | CLI_MIN,
     .metavar = "M", .help = "merges to learn (GPT-1: 40000)"},
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(TrainArgs, out), .flags = CLI_REQUIRED,
     .metavar = "TOK.h5", .help = "the tokenizer file written"},
    CLI_END};

static const CliCommand train_cmd = {
    .name = "tokenizer train", .args = "FILES...", .min_args = 1, .max_args = -1, .opts = train_opts,
    .size = sizeof(TrainArgs),
    .about = "Learns M byte-level BPE merges from UTF-8 text files; the vocabulary is 256 bytes +\n"
             "M merges + <|endoftext|>, <|start|>, <|delim|>, <|extract|>.\n"};

static int tokenizer_train(int argc, char **argv) {
    TrainArgs a = {0};
    int first, rc = cli_parse(&train_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    int merges = a.merges;
    const char *out = a.out;
    if (cli_check_output("tokenizer train", "out", out, (const char *const *)argv + first, argc - first)) return 2;
    Pretokenizer *pre = pretok_create();
    if (!pre) return cli_fail("tokenizer train");
    WordCounts wc = {0};
    hm_init(&wc.index, 1 << 16);
    double t0 = now_seconds();
    size_t total_bytes = 0;
    rc = 0;
    for (int i = first; i < argc && !rc; i++) {
        size_t len;
        uint8_t *text = read_file(argv[i], &len);
        size_t bom = text ? utf8_bom_len(text, len) : 0;
        rc = !text || check_text(argv[i], text, len, 0) || pretok_split(pre, text + bom, len - bom, count_piece, &wc);
        total_bytes += len;
        free(text);
    }
    int32_t(*m)[2] = xmalloc(((size_t)merges + 1) * sizeof *m);
    int learned = 0;
    Tokenizer *t = NULL;
    if (!rc) {
        fprintf(stderr, "%zu bytes, %zu distinct pieces in %.1f s; learning %d merges\n", total_bytes, wc.n,
                now_seconds() - t0, merges);
        learned = bpe_learn(wc.words, wc.n, merges, m, print_progress, &t0);
        rc = learned < 0;
    }
    if (!rc && (t = tokenizer_from_merges((const int32_t(*)[2])m, learned)) && !tokenizer_save(t, out))
        printf("wrote %s: %d merges%s, vocabulary %d, %.1f s\n", out, learned,
               learned < merges ? " (no pair left to merge)" : "", tokenizer_vocab_size(t), now_seconds() - t0);
    else
        rc = 1;
    tokenizer_free(t);
    free(m);
    for (size_t i = 0; i < wc.n_arenas; i++) free(wc.arenas[i]);
    free(wc.arenas);
    free(wc.words);
    hm_free(&wc.index);
    pretok_free(pre);
    return rc ? cli_fail("tokenizer train") : 0;
}

typedef struct {
    const char *out, *encoder, *merges, *tiktoken, *json, *dir;
} ImportArgs;

#define I(field) offsetof(ImportArgs, field)

static const CliOpt import_opts[] = {
    {.name = "out", .kind = CLI_STRING, .offset = I(out), .flags = CLI_REQUIRED, .metavar = "TOK.h5",
     .help = "the tokenizer file written"},
    {.name = "encoder", .kind = CLI_STRING, .offset = I(encoder), .metavar = "encoder.json",
     .help = "OpenAI's token table, with --merges-file vocab.bpe"},
    {.name = "vocab", .kind = CLI_STRING, .offset = I(encoder), .metavar = "vocab.json",
     .help = "the same, as Hugging Face names it, with --merges-file merges.txt"},
    {.name = "merges-file", .kind = CLI_STRING, .offset = I(merges), .metavar = "FILE",
     .help = "the merges (vocab.bpe or merges.txt)"},
    {.name = "tokenizer-json", .kind = CLI_STRING, .offset = I(json), .metavar = "tokenizer.json",
     .help = "Hugging Face's tokenizer file"},
    {.name = "hf", .kind = CLI_STRING, .offset = I(dir), .metavar = "DIR", .help = "a directory holding either"},
    {.name = "tiktoken", .kind = CLI_STRING, .offset = I(tiktoken), .metavar = "FILE",
     .help = "tiktoken's rank file (r50k_base.tiktoken: GPT-2's 50257 tokens)"},
    CLI_END};

static const CliCommand import_cmd = {
    .name = "tokenizer import", .opts = import_opts, .size = sizeof(ImportArgs),
    .about = "Reads a byte-level BPE (GPT-2's scheme) from one source: --encoder (or --vocab) with\n"
             "--merges-file, --tokenizer-json, --hf or --tiktoken. Tokens that are neither a byte nor\n"
             "a merge's result are special tokens.\n"};

static int tokenizer_import(int argc, char **argv) {
    ImportArgs a = {0};
    int first, rc = cli_parse(&import_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *out = a.out, *encoder = a.encoder, *merges = a.merges, *tiktoken = a.tiktoken, *json = a.json,
               *dir = a.dir;
    int sources = !!tiktoken + !!json + !!dir + !!(encoder || merges);
    const char *inputs[] = {encoder, merges, tiktoken, json};
    if (cli_check_output("tokenizer import", "out", out, inputs, 4)) return 2;
    if (sources != 1 || !encoder != !merges)
        return cli_usage_error("tokenizer import", "give one of --vocab (or --encoder) with --merges-file, "
                                                   "--tokenizer-json, --hf or --tiktoken");
    Tokenizer *t = tiktoken ? tokenizer_import_tiktoken(tiktoken)
                 : json     ? tokenizer_import_hf_json(json)
                 : dir      ? tokenizer_import_hf_dir(dir)
                            : tokenizer_import_gpt2(encoder, merges);
    if (!t || tokenizer_save(t, out)) {
        tokenizer_free(t);
        return cli_fail("tokenizer import");
    }
    int eot = tokenizer_special_id(t, TOK_EOT);
    printf("wrote %s: vocabulary %d (%d merges), ", out, tokenizer_vocab_size(t), tokenizer_n_merges(t));
    if (eot >= 0) printf("%s = %d\n", TOK_EOT, eot);
    else printf("no %s (generate and score need one)\n", TOK_EOT);
    tokenizer_free(t);
    return 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "train")) return tokenizer_train(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "import")) return tokenizer_import(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help_tokenizer, stdout);
        return 0;
    }
    fputs(help_tokenizer, stderr);
    return 2;
}

/* The options of tokenize and detokenize. */
typedef struct {
    const char *tok;
    int allow_special;
} CodecArgs;

static const CliOpt codec_opts[] = {
    {.name = "tokenizer", .kind = CLI_STRING, .offset = offsetof(CodecArgs, tok), .flags = CLI_REQUIRED,
     .metavar = "TOK.h5", .help = "a tokenizer file, a corpus or a checkpoint"},
    {.name = "allow-special", .kind = CLI_FLAG, .offset = offsetof(CodecArgs, allow_special),
     .help = "spellings of special tokens in the text are those tokens (detokenize always writes their names)"},
    CLI_END};

static const CliCommand tokenize_cmd = {
    .name = "tokenize", .args = "[FILE]", .max_args = 1, .opts = codec_opts, .size = sizeof(CodecArgs),
    .about = "Prints the token ids of FILE (default: standard input) on one line. Spellings of\n"
             "special tokens are ordinary text unless --allow-special.\n"};

static const CliCommand detokenize_cmd = {
    .name = "detokenize", .args = "[FILE]", .max_args = 1, .opts = codec_opts, .size = sizeof(CodecArgs),
    .about = "Writes the bytes of the whitespace-separated token ids in FILE (default: standard\n"
             "input), special tokens as their names. Nothing is written unless every id is valid.\n"};

int cmd_tokenize(int argc, char **argv) {
    CodecArgs a = {0};
    int first, rc = cli_parse(&tokenize_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *tok = a.tok, *in = first < argc ? argv[first] : "-";
    int allow = a.allow_special;
    Tokenizer *t = tokenizer_load(tok);
    if (!t) return cli_fail("tokenize");
    size_t len;
    uint8_t *text = read_file(in, &len);
    TokenVec ids = {0};
    rc = !text || tokenizer_encode(t, text, len, allow, &ids);
    if (!rc) {
        char buf[16];
        for (size_t i = 0; i < ids.n; i++) {
            int n = snprintf(buf, sizeof buf, i ? " %d" : "%d", ids.ids[i]);
            fwrite(buf, 1, (size_t)n, stdout);
        }
        fputc('\n', stdout);
        rc = fflush(stdout) != 0 && !gpt_error("writing to standard output failed");
    }
    free(ids.ids);
    free(text);
    tokenizer_free(t);
    return rc ? cli_fail("tokenize") : 0;
}

int cmd_detokenize(int argc, char **argv) {
    CodecArgs a = {0};
    int first, rc = cli_parse(&detokenize_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *tok = a.tok, *in = first < argc ? argv[first] : "-";
    Tokenizer *t = tokenizer_load(tok);
    if (!t) return cli_fail("detokenize");
    size_t len;
    char *text = (char *)read_file(in, &len), *p = text;
    TokenVec ids = {0};
    rc = !text;
    for (size_t pos = 0; !rc; pos++) {
        p += strspn(p, " \n\t\r");
        if (!*p) break;
        char *end;
        long id = strtol(p, &end, 10);
        size_t n;
        if (end == p || !strchr(" \n\t\r", *end) || id < 0 || id >= tokenizer_vocab_size(t) ||
            !tokenizer_token_bytes(t, (int32_t)id, &n))
            rc = gpt_error("%s: token %zu ('%.*s') is not an id in [0, %d)", in, pos, (int)strcspn(p, " \n\t\r"), p,
                           tokenizer_vocab_size(t));
        else
            tokvec_push(&ids, (int32_t)id);
        p = end;
    }
    for (size_t i = 0; !rc && i < ids.n; i++) {
        size_t n;
        const uint8_t *bytes = tokenizer_token_bytes(t, ids.ids[i], &n);
        fwrite(bytes, 1, n, stdout);
    }
    if (!rc && fflush(stdout)) rc = gpt_error("writing to standard output failed");
    free(ids.ids);
    free(text);
    tokenizer_free(t);
    return rc ? cli_fail("detokenize") : 0;
}
