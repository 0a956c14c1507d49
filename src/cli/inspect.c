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

#include "base/util.h"
#include "cli/cli.h"
#include "files/checkpoint.h"
#include "files/corpus_check.h"
#include "files/data.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/task_file.h"
#include "files/task_model.h"
#include "model/model.h"
#include "text/tokenizer.h"

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

static int inspect_corpus(const char *path, const char *expected_tok) {
    CorpusCheck c;
    if (corpus_check(path, &c)) return cli_fail("inspect");
    Tokenizer *want = NULL;
    char why[128];
    if (expected_tok && (!(want = tokenizer_load(expected_tok)) || !tokenizer_equal(c.tok, want, why, sizeof why))) {
        if (want) gpt_error("%s was tokenized with a different tokenizer than %s (%s)", path, expected_tok, why);
        tokenizer_free(c.tok);
        tokenizer_free(want);
        return cli_fail("inspect");
    }
    tokenizer_free(want);
    printf("%s: corpus\n  train: %lld tokens, %lld documents\n  val:   %lld tokens, %lld documents\n", path,
           (long long)c.tokens[SPLIT_TRAIN], (long long)c.docs[SPLIT_TRAIN], (long long)c.tokens[SPLIT_VAL],
           (long long)c.docs[SPLIT_VAL]);
    printf("  vocabulary %d (%d merges), <|endoftext|> = %d; checksums verified\n  first tokens: ", c.vocab_size,
           tokenizer_n_merges(c.tok), c.eot_token);
    print_tokens(c.tok, c.first, (size_t)c.n_first);
    tokenizer_free(c.tok);
    return 0;
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
    for (int s = 0; s < 2; s++) {
        int64_t seqs = 0, tokens = 0;
        for (int64_t i = 0; i < task_examples(d, s); i++) {
            TaskExample ex;
            task_example(d, s, i, &ex);
            seqs += ex.n_seqs;
            for (int k = 0; k < ex.n_seqs; k++) tokens += ex.len[k];
        }
        printf("  %-5s  %lld examples, %lld sequences, %lld tokens\n", cli_split_names[s], (long long)task_examples(d, s),
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
    float *mom[2] = {xalloc_floats(m->n_params), xalloc_floats(m->n_params)};
    int rc = ckpt_read_moments(path, m, mom[0], mom[1]);
    for (int k = 0; !rc && k < 2; k++) *bad += count_bad(m, mom[k], k == 1);
    free(mom[0]);
    free(mom[1]);
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

/* The values of a group's tensors that are not finite (or, for second moments, negative). */
typedef struct {
    int second_moments;
    size_t values, bad;
} GroupCount;

static void count_tensor(void *ctx, const char *name, const float *v, size_t n) {
    (void)name;
    GroupCount *c = ctx;
    double sq;
    c->bad += bad_values(v, n, c->second_moments, &sq);
    c->values += n;
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
 * the head and their moments, each group read whole (so every checksum is verified). */
static int inspect_adapter_checkpoint(const char *path) {
    if (print_checkpoint_header(path)) return cli_fail("inspect");
    printf("  /model: the configuration only (the frozen base is not copied)\n");
    size_t bad = 0;
    static const char *const groups[] = {"/lora", "/head", "/optimizer/m/lora", "/optimizer/v/lora",
                                         "/optimizer/m/head", "/optimizer/v/head"};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) {
        GroupCount c = {.second_moments = !strncmp(groups[i], "/optimizer/v", 12)};
        long n;
        int found = ckpt_each_tensor(path, groups[i], count_tensor, &c, &n);
        if (found < 0) return cli_fail("inspect");
        if (found) printf("  %s: %ld tensors, %zu values\n", groups[i], n, c.values);
        bad += c.bad;
    }
    if (bad) {
        fprintf(stderr, "gpt inspect: %s: %zu non-finite (or negative second-moment) values\n", path, bad);
        return 1;
    }
    printf("  all tensors finite; checksums verified\n");
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *expected_tok = NULL;
    int first, rc = cli_parse(&inspect_cmd, argc, argv, &expected_tok, &first);
    if (rc >= 0) return rc;
    const char *path = argv[first];
    char format[32];
    if (h5_file_format(path, format, sizeof format)) return cli_fail("inspect");
    int checkpoint = !strcmp(format, CKPT_FORMAT);
    int adapters = checkpoint && !expected_tok ? ckpt_model_is_empty(path) : 0;
    if (adapters < 0) return cli_fail("inspect");
    if (!strcmp(format, CORPUS_FORMAT)) return inspect_corpus(path, expected_tok);
    if (expected_tok) return cli_usage_error("inspect", "--tokenizer applies to corpus files only");
    if (!strcmp(format, TOKENIZER_FORMAT)) return inspect_tokenizer(path);
    if (!strcmp(format, TASK_FORMAT)) return inspect_task(path);
    if (!strcmp(format, TASK_MODEL_FORMAT)) return inspect_task_model(path);
    if (adapters) return inspect_adapter_checkpoint(path);
    return inspect_model(path, checkpoint);
}
