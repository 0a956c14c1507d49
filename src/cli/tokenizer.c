/* tokenizer.c: `gpt tokenizer train|import`, `gpt tokenize`, `gpt detokenize`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/bpe_train.h"
#include "cli/cli.h"
#include "base/hashmap.h"
#include "files/tokenizer_file.h"
#include "base/util.h"

static const char help_tokenizer[] =
    "usage: gpt tokenizer train --merges M --out TOK.h5 FILES...\n"
    "       gpt tokenizer import --out TOK.h5 (--encoder encoder.json --merges-file vocab.bpe\n"
    "                                          | --vocab vocab.json --merges-file merges.txt\n"
    "                                          | --tokenizer-json tokenizer.json | --hf DIR\n"
    "                                          | --tiktoken r50k_base.tiktoken)\n\n"
    "train learns M byte-level BPE merges from UTF-8 text files (GPT-1: 40000); the\n"
    "vocabulary is 256 bytes + M merges + <|endoftext|>, <|start|>, <|delim|>, <|extract|>.\n"
    "import reads a byte-level BPE (GPT-2's scheme): OpenAI's encoder.json + vocab.bpe, which\n"
    "Hugging Face calls vocab.json + merges.txt; Hugging Face's tokenizer.json; a directory\n"
    "holding either (--hf); or tiktoken's rank file (GPT-2's 50257 tokens, <|endoftext|> =\n"
    "50256). Tokens that are neither a byte nor a merge's result are special tokens.\n";

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

static int tokenizer_train(int argc, char **argv) {
    static const struct option opts[] = {{"merges", required_argument, 0, 'm'},
                                         {"out", required_argument, 0, 'o'},
                                         {0, 0, 0, 0}};
    int merges = -1, opt;
    const char *out = NULL;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'm' && !parse_int(optarg, &merges) && merges >= 0) continue;
        if (opt == 'm') return cli_usage_error("tokenizer train", "--merges: expected an integer >= 0, got '%s'", optarg);
        if (opt == 'o') out = optarg;
        else return cli_usage_error("tokenizer train", "unknown option");
    }
    if (merges < 0 || !out) return cli_usage_error("tokenizer train", "--merges M and --out TOK.h5 are required");
    if (optind == argc) return cli_usage_error("tokenizer train", "no input files");
    Pretokenizer *pre = pretok_create();
    if (!pre) return cli_fail("tokenizer train");
    WordCounts wc = {0};
    hm_init(&wc.index, 1 << 16);
    double t0 = now_seconds();
    size_t total_bytes = 0;
    int rc = 0;
    for (int i = optind; i < argc && !rc; i++) {
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

static int tokenizer_import(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"encoder", required_argument, 0, 'e'},
                                         {"vocab", required_argument, 0, 'e'},
                                         {"merges-file", required_argument, 0, 'm'},
                                         {"tokenizer-json", required_argument, 0, 'j'},
                                         {"hf", required_argument, 0, 'd'},
                                         {"tiktoken", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *encoder = NULL, *merges = NULL, *tiktoken = NULL, *json = NULL, *dir = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'o': out = optarg; break;
        case 'e': encoder = optarg; break;
        case 'm': merges = optarg; break;
        case 'j': json = optarg; break;
        case 'd': dir = optarg; break;
        case 't': tiktoken = optarg; break;
        case 'h': return fputs(help_tokenizer, stdout), 0;
        default: return cli_usage_error("tokenizer import", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("tokenizer import", "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error("tokenizer import", "--out TOK.h5 is required");
    int sources = !!tiktoken + !!json + !!dir + !!(encoder || merges);
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

/* Shared option parsing of tokenize/detokenize: --tokenizer FILE [--allow-special] [FILE]. */
static int parse_codec_args(const char *cmd, const char *help, int argc, char **argv,
                            const char **tok, const char **in, int *allow_special) {
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"allow-special", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 't') *tok = optarg;
        else if (opt == 's' && allow_special) *allow_special = 1;
        else if (opt == 'h') return fputs(help, stdout), 0;
        else return cli_usage_error(cmd, "unknown option");
    }
    if (!*tok) return cli_usage_error(cmd, "--tokenizer FILE is required");
    if (argc - optind > 1) return cli_usage_error(cmd, "expected at most one input file");
    *in = optind < argc ? argv[optind] : "-";
    return -1; /* go on */
}

int cmd_tokenize(int argc, char **argv) {
    static const char help[] = "usage: gpt tokenize --tokenizer TOK.h5 [--allow-special] [FILE]\n\n"
                               "Prints the token ids of FILE (default: standard input) on one line.\n"
                               "Spellings of special tokens are ordinary text unless --allow-special.\n"
                               "TOK.h5: a tokenizer file, a corpus or a checkpoint.\n";
    const char *tok = NULL, *in = NULL;
    int allow = 0, rc = parse_codec_args("tokenize", help, argc, argv, &tok, &in, &allow);
    if (rc >= 0) return rc;
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
    static const char help[] = "usage: gpt detokenize --tokenizer TOK.h5 [FILE]\n\n"
                               "Writes the bytes of the whitespace-separated token ids in FILE\n"
                               "(default: standard input). Nothing is written unless every id is valid.\n";
    const char *tok = NULL, *in = NULL;
    int rc = parse_codec_args("detokenize", help, argc, argv, &tok, &in, NULL);
    if (rc >= 0) return rc;
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
