/* inspect.c: `gpt inspect`, a human summary of any file the tool writes, chosen by its
 * root attribute `format`. Inspecting also verifies: a model's tensors are present,
 * shaped as its configuration says and finite; a checkpoint's moments too, and every
 * checksum in it; a tokenizer loads; a corpus's datasets agree with its attributes and
 * their checksums verify; a task file loads (task_load checks all of it); a fine-tuned
 * model loads with its base (whose fingerprint must match). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files/checkpoint.h"
#include "cli/cli.h"
#include "files/data.h"
#include "files/model_file.h"
#include "files/h5util.h"
#include "model/model.h"
#include "files/task_file.h"
#include "files/task_model.h"
#include "text/tokenizer.h"
#include "base/util.h"
#include "files/formats.h"

static const CliOpt inspect_opts[] = {
    {.name = "tokenizer", .kind = CLI_STRING, .metavar = "TOK.h5",
     .help = "check that a corpus was tokenized with TOK.h5 (or with the tokenizer a corpus or tokenizer file carries)"},
    CLI_END};

static const CliCommand inspect_cmd = {
    .name = "inspect", .args = "FILE.h5", .min_args = 1, .max_args = 1, .opts = inspect_opts,
    .size = sizeof(const char *),
    .about = "Prints what a model, checkpoint, tokenizer, corpus, task file or fine-tuned model holds\n"
             "and checks it (a fine-tuned model's adapters against their base).\n"};

static void print_tokens(const Tokenizer *t, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *b = tokenizer_token_bytes(t, ids[i], &len);
        putchar('[');
        for (size_t j = 0; b && j < len; j++) putchar(b[j] == '\n' ? ' ' : b[j]);
        putchar(']');
    }
    putchar('\n');
}

static int inspect_tokenizer(const char *path) {
    Tokenizer *t = tokenizer_load(path);
    if (!t) return cli_fail("inspect");
    printf("%s: tokenizer, byte-level BPE\n  vocabulary %d: 256 bytes, %d merges, special:", path,
           tokenizer_vocab_size(t), tokenizer_n_merges(t));
    TokenizerParts p = tokenizer_parts(t);
    for (int i = 0; i < p.n_special; i++) printf(" %s = %d", p.special_names[i], p.special_ids[i]);
    static const char sample[] = "Hello world! The tokenizer splits text like this.";
    TokenVec ids = {0};
    int rc = tokenizer_encode(t, (const uint8_t *)sample, sizeof sample - 1, 0, &ids);
    if (!rc) {
        printf("\n  \"%s\" -> %zu tokens: ", sample, ids.n);
        print_tokens(t, ids.ids, ids.n);
    }
    free(ids.ids);
    tokenizer_free(t);
    return rc ? cli_fail("inspect") : 0;
}

/* Elements read at once: memory stays bounded whatever the corpus's size. */
#define CHECK_BLOCK ((hsize_t)1 << 20)

/* Reads elements [start, start + n) of a 1-D dataset; -1 on a checksum mismatch. */
static int read_block(hid_t d, hid_t mem_type, hsize_t start, hsize_t n, void *buf) {
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &n, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
    herr_t rc = H5Dread(d, mem_type, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

/* Reads every token and offset of a split, block by block, through HDF5's Fletcher32
 * check, and checks tokens against the vocabulary and offsets for order: the split is
 * whole if this passes. first (n_first) receives the split's first tokens, -1 past its end. */
static int check_split(const char *path, hid_t f, const char *split, int64_t tokens, int64_t docs, int vocab,
                       int32_t *first, size_t n_first) {
    char where[16];
    snprintf(where, sizeof where, "/%s", split);
    hid_t g = H5Gopen2(f, split, H5P_DEFAULT);
    if (g < 0) return gpt_error("%s: group %s is missing", path, where);
    hsize_t nt, nd;
    hid_t dt = h5_open_dataset(path, where, g, "tokens", 1, &nt);
    hid_t dd = dt < 0 ? -1 : h5_open_dataset(path, where, g, "doc_offsets", 1, &nd);
    int rc = dt < 0 || dd < 0;
    if (!rc && (nt != (hsize_t)tokens || nd != (hsize_t)docs + 1))
        rc = gpt_error("%s: %s holds %llu tokens and %llu offsets, its attributes say %lld and %lld + 1", path,
                       where, (unsigned long long)nt, (unsigned long long)nd, (long long)tokens, (long long)docs);
    uint32_t *tok = xmalloc(CHECK_BLOCK * sizeof *tok);
    int64_t *off = xmalloc(CHECK_BLOCK * sizeof *off), prev = -1;
    for (size_t i = 0; i < n_first; i++) first[i] = -1;
    for (hsize_t b = 0; !rc && b < nt; b += CHECK_BLOCK) {
        hsize_t n = nt - b < CHECK_BLOCK ? nt - b : CHECK_BLOCK;
        if (read_block(dt, H5T_NATIVE_UINT32, b, n, tok))
            rc = gpt_error("%s: cannot read %s/tokens (checksum mismatch: the file is corrupted)", path, where);
        for (hsize_t i = 0; !rc && i < n; i++)
            if (tok[i] >= (uint32_t)vocab)
                rc = gpt_error("%s: %s/tokens[%llu] = %u is outside the vocabulary", path, where,
                               (unsigned long long)(b + i), tok[i]);
        for (size_t i = 0; !rc && b == 0 && i < n_first && i < n; i++) first[i] = (int32_t)tok[i];
    }
    for (hsize_t b = 0; !rc && b < nd; b += CHECK_BLOCK) {
        hsize_t n = nd - b < CHECK_BLOCK ? nd - b : CHECK_BLOCK;
        if (read_block(dd, H5T_NATIVE_INT64, b, n, off))
            rc = gpt_error("%s: cannot read %s/doc_offsets (checksum mismatch: the file is corrupted)", path, where);
        for (hsize_t i = 0; !rc && i < n; i++) {
            hsize_t k = b + i;
            if ((k == 0 && off[i] != 0) || (k > 0 && off[i] <= prev) || (k + 1 == nd && off[i] != tokens))
                rc = gpt_error("%s: %s/doc_offsets[%llu] = %lld is out of order", path, where, (unsigned long long)k,
                               (long long)off[i]);
            prev = off[i];
        }
    }
    free(tok);
    free(off);
    if (dd >= 0) H5Dclose(dd);
    if (dt >= 0) H5Dclose(dt);
    H5Gclose(g);
    return rc;
}

static int inspect_corpus(const char *path, hid_t f, const char *expected_tok) {
    int64_t n[4];
    int vocab, eot;
    if (h5_read_attr_int(path, "", f, "vocab_size", &vocab) || h5_read_attr_int(path, "", f, "eot_token", &eot) ||
        h5_read_attr_i64(path, "", f, "train_tokens", &n[0]) || h5_read_attr_i64(path, "", f, "train_docs", &n[1]) ||
        h5_read_attr_i64(path, "", f, "val_tokens", &n[2]) || h5_read_attr_i64(path, "", f, "val_docs", &n[3]))
        return cli_fail("inspect");
    Tokenizer *t = tokenizer_read_h5(f, path), *want = NULL;
    if (!t) return cli_fail("inspect");
    char why[128];
    if (expected_tok && (!(want = tokenizer_load(expected_tok)) || !tokenizer_equal(t, want, why, sizeof why))) {
        if (want) gpt_error("%s was tokenized with a different tokenizer than %s (%s)", path, expected_tok, why);
        tokenizer_free(t);
        tokenizer_free(want);
        return cli_fail("inspect");
    }
    tokenizer_free(want);
    int32_t first[24];
    int rc = tokenizer_vocab_size(t) != vocab
                 ? gpt_error("%s: vocab_size %d, but its tokenizer has %d tokens", path, vocab, tokenizer_vocab_size(t))
                 : check_split(path, f, "train", n[0], n[1], vocab, first, 24) ||
                       check_split(path, f, "val", n[2], n[3], vocab, NULL, 0);
    if (!rc) {
        printf("%s: corpus\n  train: %lld tokens, %lld documents\n  val:   %lld tokens, %lld documents\n", path,
               (long long)n[0], (long long)n[1], (long long)n[2], (long long)n[3]);
        printf("  vocabulary %d (%d merges), <|endoftext|> = %d; checksums verified\n  first tokens: ", vocab,
               tokenizer_n_merges(t), eot);
        size_t k = 0;
        while (k < 24 && first[k] >= 0) k++;
        print_tokens(t, first, k);
    }
    tokenizer_free(t);
    return rc ? cli_fail("inspect") : 0;
}

static int inspect_task(const char *path) {
    TaskData *d = task_load(path);
    Tokenizer *t = d ? tokenizer_load(path) : NULL;
    if (!t) {
        task_free(d);
        return cli_fail("inspect");
    }
    static const char *const kinds[] = {"classes", "real numbers", "the right answer's index"};
    const TaskInfo *in = task_info(d);
    printf("%s: task file, %s; labels are %s", path, task_type_name(in->type), kinds[in->label_kind]);
    if (in->label_kind == LABEL_CLASS) {
        printf(" (%d", in->n_classes);
        for (int k = 0; task_class_name(d, k); k++) printf("%s%s", k ? ", " : ": ", task_class_name(d, k));
        putchar(')');
    }
    printf("\n  n_ctx %d, vocabulary %d; %lld records were truncated\n", in->n_ctx, in->vocab_size,
           (long long)in->truncated);
    static const char *const splits[2] = {"train", "val"};
    for (int s = 0; s < 2; s++) {
        int64_t seqs = 0, tokens = 0;
        for (int64_t i = 0; i < task_examples(d, s); i++) {
            TaskExample ex;
            task_example(d, s, i, &ex);
            seqs += ex.n_seqs;
            for (int k = 0; k < ex.n_seqs; k++) tokens += ex.len[k];
        }
        printf("  %-5s  %lld examples, %lld sequences, %lld tokens\n", splits[s], (long long)task_examples(d, s),
               (long long)seqs, (long long)tokens);
    }
    int s = task_examples(d, SPLIT_TRAIN) ? SPLIT_TRAIN : SPLIT_VAL;
    if (task_examples(d, s)) {
        TaskExample ex;
        task_example(d, s, 0, &ex);
        printf("  first example (label %g): ", ex.label);
        print_tokens(t, ex.tokens, (size_t)ex.len[0]);
    }
    printf("  offsets, tokens and labels verified; checksums verified\n");
    tokenizer_free(t);
    task_free(d);
    return 0;
}

/* Values of a tensor that are not finite (or, for second moments, negative); *sq gets
 * the sum of squares of the others. */
static size_t bad_values(const float *p, size_t n, int nonnegative, double *sq) {
    size_t bad = 0;
    *sq = 0.0;
    for (size_t j = 0; j < n; j++) {
        if (!isfinite(p[j]) || (nonnegative && p[j] < 0.0f)) bad++;
        else *sq += (double)p[j] * p[j];
    }
    return bad;
}

static size_t count_bad(const GPT *m, const float *buf, int nonnegative) {
    size_t bad = 0;
    double sq;
    for (int i = 0; i < m->n_tensors; i++)
        bad += bad_values(buf + m->tensors[i].offset, m->tensors[i].numel, nonnegative, &sq);
    return bad;
}

/* Prints each tensor's shape, size and RMS; returns how many values are not finite. */
static size_t print_tensors(const GPT *m) {
    size_t bad_total = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        double sq;
        size_t bad = bad_values(m->params + t->offset, t->numel, 0, &sq);
        bad_total += bad;
        if (t->ndim == 2) printf("  %-28s [%d, %d]", t->name, t->shape[0], t->shape[1]);
        else printf("  %-28s [%d]   ", t->name, t->shape[0]);
        printf("  %8.3f MB  rms %.4g%s\n", (double)t->numel * 4 / 1e6, sqrt(sq / (double)t->numel),
               bad ? "  NON-FINITE VALUES" : "");
    }
    return bad_total;
}

/* A checkpoint's training state and optimizer moments (its /model is printed after). */
/* The header line and the run's configuration of a checkpoint. */
static int print_checkpoint_header(const char *path) {
    GPTConfig cfg;
    CkptState st;
    if (ckpt_read_header(path, &cfg, &st)) return -1;
    json_t *config = json_loads(st.config, 0, NULL);
    char *compact = config ? json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    printf("%s: GPT training checkpoint\n  step %ld (%ld optimizer updates), %lld samples, %lld tokens; seed %llu, "
           "global batch %lld; saved %s by %d rank(s)\n  corpus %s\n  run configuration: %s\n",
           path, st.step, st.optim_step, (long long)st.samples, (long long)st.tokens, (unsigned long long)st.seed,
           (long long)st.global_batch, st.time, st.ranks, st.corpus, compact ? compact : st.config);
    free(compact);
    json_decref(config);
    ckpt_state_free(&st);
    return 0;
}

static int inspect_checkpoint_state(const char *path, GPT *m, size_t *bad) {
    if (print_checkpoint_header(path)) return -1;
    static const char *const groups[2] = {"/optimizer/m", "/optimizer/v"};
    float *buf = xalloc_floats(m->n_params);
    hid_t f = h5_open_read(path);
    int rc = f < 0 ? -1 : 0;
    for (int k = 0; !rc && k < 2; k++) {
        rc = model_tensors_read(path, f, groups[k], m->tensors, m->n_tensors, buf);
        if (!rc) *bad += count_bad(m, buf, k == 1);
    }
    if (f >= 0) H5Fclose(f);
    free(buf);
    Tokenizer *tok = rc ? NULL : tokenizer_load(path);
    if (!rc && !tok) rc = -1;
    if (tok)
        printf("  /optimizer/m and /optimizer/v: Adam's moments, %d tensors each, shaped as /model\n"
               "  /tokenizer: vocabulary %d (%d merges)\n",
               m->n_tensors, tokenizer_vocab_size(tok), tokenizer_n_merges(tok));
    tokenizer_free(tok);
    return rc;
}

static int inspect_model(const char *path, int checkpoint) {
    GPT *m = model_file_load_any(path, 1);
    if (!m) return cli_fail("inspect");
    size_t nonfinite = 0;
    if (checkpoint && inspect_checkpoint_state(path, m, &nonfinite)) {
        gpt_free(m);
        return cli_fail("inspect");
    }
    printf(checkpoint ? "/model:\n  " : "%s: GPT model file\n  ", path);
    config_print(stdout, &m->cfg);
    printf("  parameters: %zu (%.1f MB as float32), %zu without wpe\n", m->n_params,
           (double)m->n_params * 4 / 1e6, gpt_params_no_wpe(&m->cfg));
    nonfinite += print_tensors(m);
    gpt_free(m);
    if (nonfinite) {
        fprintf(stderr, "gpt inspect: %s: %zu non-finite (or negative second-moment) values\n", path, nonfinite);
        return 1;
    }
    printf(checkpoint ? "  all tensors present, shaped and finite; checksums verified\n"
                      : "  all tensors present, shaped and finite\n");
    return 0;
}

/* Reads every float dataset of a group whole (so every checksum is verified); prints a
 * line for the group; adds the non-finite values to *bad. */
static int verify_group(const char *path, hid_t f, const char *where, size_t *bad) {
    hid_t g = H5Lexists(f, where + 1, H5P_DEFAULT) > 0 ? H5Gopen2(f, where, H5P_DEFAULT) : -1;
    if (g < 0) return gpt_error("%s: group %s is missing", path, where);
    H5G_info_t info;
    H5Gget_info(g, &info);
    size_t values = 0;
    int rc = 0;
    for (hsize_t i = 0; !rc && i < info.nlinks; i++) {
        char name[GPT_TENSOR_NAME_MAX];
        H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        hsize_t dims[2];
        hid_t d = H5Dopen2(g, name, H5P_DEFAULT), space = d < 0 ? -1 : H5Dget_space(d);
        int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
        if (space >= 0) H5Sclose(space);
        if (d >= 0) H5Dclose(d);
        float *v = rank == 1 || rank == 2 ? h5_read_all(path, where, g, name, rank, H5T_NATIVE_FLOAT, sizeof(float), dims) : NULL;
        if (!v) {
            rc = rank == 1 || rank == 2 ? -1 : gpt_error("%s: %s/%s is not a 1-D or 2-D tensor", path, where, name);
            break;
        }
        size_t n = rank == 2 ? dims[0] * dims[1] : dims[0];
        double sq;
        *bad += bad_values(v, n, !strncmp(where, "/optimizer/v", 12), &sq);
        values += n;
        free(v);
    }
    H5Gclose(g);
    if (!rc) printf("  %s: %llu tensors, %zu values\n", where, (unsigned long long)info.nlinks, values);
    return rc;
}

/* A fine-tuned model: the task, the head, the model or the adapters with their base. */
static int inspect_task_model(const char *path) {
    TaskModel *tm = task_model_load(path, NULL, 1, 0);
    if (!tm) return cli_fail("inspect");
    printf("%s: fine-tuned model", path);
    if (tm->head) {
        printf(", task %s, n_ctx %d, head (%d, %d)", task_type_name(tm->info.type), tm->info.n_ctx, tm->head->n_out,
               tm->head->C);
        for (int k = 0; k < tm->n_names; k++) printf("%s%s", k ? ", " : "; classes ", tm->names[k]);
    } else
        printf(" (adapters from continued pre-training, no head)");
    printf("\n  ");
    config_print(stdout, &tm->m->cfg);
    size_t bad = tm->head ? bad_values(tm->head->params, tm->head->n_params, 0, &(double){0}) : 0;
    if (tm->lora) {
        char targets[16];
        printf("  LoRA adapters: rank %d, alpha %g, on %s; %zu parameters; base %s (its weights match the "
               "fingerprint)\n", tm->lora->rank, (double)tm->lora->alpha,
               lora_targets_name(tm->lora->targets, targets, sizeof targets), tm->lora->n_params, tm->base);
        bad += bad_values(tm->lora->params, tm->lora->n_params, 0, &(double){0});
    } else
        bad += count_bad(tm->m, tm->m->params, 0);
    task_model_free(tm);
    if (bad) {
        fprintf(stderr, "gpt inspect: %s: %zu non-finite values\n", path, bad);
        return 1;
    }
    printf("  all tensors present, shaped and finite\n");
    return 0;
}

/* A LoRA fine-tuning's checkpoint: no model tensors (the base is frozen), the adapters,
 * the head and their moments. */
static int inspect_adapter_checkpoint(const char *path, hid_t f) {
    if (print_checkpoint_header(path)) return cli_fail("inspect");
    printf("  /model: the configuration only (the frozen base is not copied)\n");
    size_t bad = 0;
    static const char *const groups[] = {"/lora", "/head", "/optimizer/m/lora", "/optimizer/v/lora",
                                         "/optimizer/m/head", "/optimizer/v/head"};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++)
        if (H5Lexists(f, groups[i][1] == 'o' ? "optimizer" : groups[i] + 1, H5P_DEFAULT) > 0 &&
            (strncmp(groups[i], "/optimizer", 10) || H5Lexists(f, groups[i] + 1, H5P_DEFAULT) > 0) &&
            verify_group(path, f, groups[i], &bad))
            return cli_fail("inspect");
    if (bad) {
        fprintf(stderr, "gpt inspect: %s: %zu non-finite (or negative second-moment) values\n", path, bad);
        return 1;
    }
    printf("  all tensors finite; checksums verified\n");
    return 0;
}

/* 1 if the checkpoint's /model group holds no tensors (a LoRA fine-tuning's). */
static int model_group_empty(hid_t f) {
    if (H5Lexists(f, "model", H5P_DEFAULT) <= 0) return 0;
    hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
    H5G_info_t info;
    int empty = g >= 0 && H5Gget_info(g, &info) >= 0 && info.nlinks == 0;
    if (g >= 0) H5Gclose(g);
    return empty;
}

int cmd_inspect(int argc, char **argv) {
    const char *expected_tok = NULL;
    int first, rc = cli_parse(&inspect_cmd, argc, argv, &expected_tok, &first);
    if (rc >= 0) return rc;
    const char *path = argv[first];
    hid_t f = h5_open_read(path);
    if (f < 0) return cli_fail("inspect");
    char format[32];
    if (h5_read_format(path, f, format, sizeof format)) {
        H5Fclose(f);
        return cli_fail("inspect");
    }
    rc = -1;
    if (!strcmp(format, TOKENIZER_FORMAT) && !expected_tok) rc = inspect_tokenizer(path);
    else if (!strcmp(format, CORPUS_FORMAT)) rc = inspect_corpus(path, f, expected_tok);
    else if (!strcmp(format, TASK_FORMAT) && !expected_tok) rc = inspect_task(path);
    else if (!strcmp(format, TASK_MODEL_FORMAT) && !expected_tok) rc = inspect_task_model(path);
    else if (!strcmp(format, CKPT_FORMAT) && !expected_tok && model_group_empty(f))
        rc = inspect_adapter_checkpoint(path, f);
    H5Fclose(f);
    if (rc >= 0) return rc;
    if (expected_tok) return cli_usage_error("inspect", "--tokenizer applies to corpus files only");
    return inspect_model(path, !strcmp(format, CKPT_FORMAT));
}
