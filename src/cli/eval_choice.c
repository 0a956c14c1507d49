/* eval_choice.c: `gpt eval-choice`, zero- and few-shot multiple-choice accuracy by
 * log-likelihood (choice.h), on any number of ranks.
 *
 * Rank r scores records r, r + P, ...; each record's numbers depend on nothing but the
 * record, the model and the seed, and one sum over the ranks (every other rank adds
 * zeros) gives every rank all of them, so the results are the same for any P. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic.h"
#include "base/util.h"
#include "cli/cli.h"
#include "cpu/threads.h"
#include "dist/dist.h"
#include "files/model_file.h"
#include "text/choice.h"

typedef struct {
    const char *model, *tok_path, *data, *shots_from, *separator, *predictions;
    int shots, threads, json, no_cache;
    uint64_t seed;
    Precision precision;
} Options;

#define O(field) offsetof(Options, field)

static const CliOpt eval_choice_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = O(model), .flags = CLI_REQUIRED, .metavar = "FILE.h5",
     .help = "a model file (from gpt train it carries its tokenizer)"},
    {.name = "data", .kind = CLI_STRING, .offset = O(data), .flags = CLI_REQUIRED, .metavar = "FILE.jsonl",
     .help = "the records scored"},
    {.name = "tokenizer", .kind = CLI_STRING, .offset = O(tok_path), .metavar = "TOK.h5",
     .help = "the tokenizer, for a model file that carries none (one it carries must be this one)"},
    {.name = "shots", .kind = CLI_INT, .offset = O(shots), .flags = CLI_MIN, .metavar = "K",
     .help = "solved examples before each record"},
    {.name = "shots-from", .kind = CLI_STRING, .offset = O(shots_from), .metavar = "FILE.jsonl",
     .help = "the records the shots are drawn from (--data itself: never the record scored)",
     .dflt = "--data"},
    {.name = "shot-separator", .kind = CLI_STRING, .offset = O(separator), .metavar = "TEXT",
     .help = "follows each shot", .dflt = "a blank line, \"\\n\\n\""},
    {.name = "seed", .kind = CLI_U64, .offset = O(seed), .metavar = "S", .help = "of the draw of the shots"},
    {.name = "predictions", .kind = CLI_STRING, .offset = O(predictions), .metavar = "OUT.jsonl",
     .help = "write every ending's score and the choice, a line a record"},
    {.name = "no-cache", .kind = CLI_FLAG, .offset = O(no_cache),
     .help = "run the context again for each ending (for comparison)"},
    CLI_THREADS_ROW(O(threads)),
    {.name = "json", .kind = CLI_FLAG, .offset = O(json), .help = "print one JSON object"},
    {.kind = CLI_GROUP, .group = cli_precision_opts, .offset = O(precision)},
    CLI_END};

static const CliCommand eval_choice_cmd = {
    .name = "eval-choice", .mpi = 1, .opts = eval_choice_opts, .size = sizeof(Options),
    .about = "Multiple-choice accuracy by log-likelihood. Each line of FILE.jsonl is a record\n"
             "{\"context\": \"...\", \"endings\": [\"...\", ...], \"label\": i} (HellaSwag's \"ctx\" is also\n"
             "read). Every ending is scored by the sum of its tokens' log-probabilities after\n"
             "<|endoftext|>, K solved examples (shots) and the context; accuracy takes the largest\n"
             "sum, accuracy_norm the largest mean per token. Each shot is its context and right ending\n"
             "followed by the separator. A prompt too long for n_ctx loses its oldest shots, then the\n"
             "start of its context. The context runs once per record and every ending continues from\n"
             "its key/value cache. Under mpirun the ranks share the records; the results are the same\n"
             "for any P. See docs/evaluation.md.\n"};

/* Per record, what the sum over the ranks carries: every ending's log-likelihood, then
 * the shots used and the tokens cut. */
typedef struct {
    int64_t *offset;  /* (n + 1) record i's endings are sums[offset[i] .. offset[i+1]) */
    double *values;   /* (n_endings + 2 n) */
    double *sums, *shots_used, *cut;
} Results;

static void results_init(Results *R, const ChoiceSet *d) {
    R->offset = xmalloc(sizeof *R->offset * (size_t)(d->n + 1));
    R->offset[0] = 0;
    for (int64_t i = 0; i < d->n; i++) R->offset[i + 1] = R->offset[i] + d->rec[i].n_endings;
    R->values = xcalloc((size_t)(d->n_endings + 2 * d->n), sizeof *R->values);
    R->sums = R->values, R->shots_used = R->values + d->n_endings, R->cut = R->shots_used + d->n;
}

typedef struct {
    double accuracy, accuracy_norm, chance, gold_ll, gold_ll_per_token;
    int64_t fewer_shots, cut;
} Summary;

static Summary summarise(const ChoiceSet *d, const Results *R, int shots) {
    Summary s = {0};
    double right = 0, right_norm = 0, gold_tokens = 0;
    for (int64_t i = 0; i < d->n; i++) {
        const ChoiceRecord *r = &d->rec[i];
        const double *sum = R->sums + R->offset[i];
        right += choice_best(r, sum, 0) == r->label;
        right_norm += choice_best(r, sum, 1) == r->label;
        s.chance += 1.0 / r->n_endings;
        s.gold_ll += sum[r->label];
        gold_tokens += (double)r->endings[r->label].n;
        s.fewer_shots += R->shots_used[i] < shots;
        s.cut += R->cut[i] > 0;
    }
    s.gold_ll_per_token = s.gold_ll / gold_tokens;
    s.accuracy = right / (double)d->n, s.accuracy_norm = right_norm / (double)d->n;
    s.chance /= (double)d->n, s.gold_ll /= (double)d->n;
    return s;
}

/* One line per record, written whole or not at all (base/atomic.h). shot_lines: the
 * lines of the shots drawn, oldest first, of which the last shots_used were kept. */
static int write_predictions(const Options *o, const ChoiceSet *d, const ChoicePromptOptions *po, const Results *R) {
    AtomicFile a;
    if (atomic_open(&a, o->predictions)) return -1;
    FILE *f = a.f;
    int64_t *shots = xmalloc(sizeof *shots * (size_t)(o->shots > 0 ? o->shots : 1));
    for (int64_t i = 0; i < d->n; i++) {
        const ChoiceRecord *r = &d->rec[i];
        const double *sum = R->sums + R->offset[i];
        json_t *sums = json_array(), *means = json_array(), *tokens = json_array(), *drawn = json_array();
        for (int k = 0; k < r->n_endings; k++) {
            json_array_append_new(sums, json_real_or_null(sum[k]));
            json_array_append_new(means, json_real_or_null(sum[k] / (double)r->endings[k].n));
            json_array_append_new(tokens, json_integer((json_int_t)r->endings[k].n));
        }
        choice_draw_shots(po, i, shots);
        for (int k = 0; k < o->shots; k++) json_array_append_new(drawn, json_integer(po->pool->rec[shots[k]].line));
        json_t *line = json_pack("{s:i,s:i,s:i,s:i,s:o,s:o,s:o,s:o,s:i,s:i}", "line", r->line, "label", r->label,
                                 "choice", choice_best(r, sum, 0), "choice_norm", choice_best(r, sum, 1), "sum", sums,
                                 "mean", means, "tokens",
                                 tokens, "shot_lines", drawn, "shots_used", (int)R->shots_used[i], "cut",
                                 (int)R->cut[i]);
        json_dumpf(line, f, JSON_REAL_PRECISION(17));
        fputc('\n', f);
        json_decref(line);
    }
    free(shots);
    return atomic_commit(&a); /* a failed write shows here */
}

static void report(const Options *o, const ChoiceSet *d, const Summary *s, double secs) {
    if (o->json) {
        json_t *j = json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:o,s:i,s:I,s:I,s:o,s:o,s:i,s:i,s:b}", "data", o->data,
                              "records", (json_int_t)d->n, "accuracy", json_real_or_null(s->accuracy),
                              "accuracy_norm", json_real_or_null(s->accuracy_norm), "chance",
                              json_real_or_null(s->chance), "gold_loglik", json_real_or_null(s->gold_ll),
                              "gold_loglik_per_token", json_real_or_null(s->gold_ll_per_token), "shots", o->shots,
                              "records_fewer_shots", (json_int_t)s->fewer_shots, "records_cut", (json_int_t)s->cut,
                              "seconds", json_real_or_null(secs), "records_per_s",
                              json_real_or_null(secs > 0 ? d->n / secs : NAN), "ranks", dist_size(), "threads",
                              o->threads, "shared_prompt", !o->no_cache);
        cli_print_json(j);
        return;
    }
    printf("%s: accuracy %.4f, accuracy_norm %.4f (chance %.4f) over %lld records, %d shot(s); gold ending "
           "log-likelihood %.4f (%.4f per token); %.1f records/s\n",
           o->data, s->accuracy, s->accuracy_norm, s->chance, (long long)d->n, o->shots, s->gold_ll,
           s->gold_ll_per_token, secs > 0 ? d->n / secs : NAN);
    if (s->fewer_shots || s->cut)
        printf("%lld record(s) had fewer than %d shots and %lld their context cut, to fit n_ctx\n",
               (long long)s->fewer_shots, o->shots, (long long)s->cut);
}

static int parse(int argc, char **argv, Options *o) {
    *o = (Options){.separator = "\n\n", .seed = 1234};
    int first, rc = cli_parse(&eval_choice_cmd, argc, argv, o, &first);
    if (rc >= 0) return rc;
    const char *inputs[] = {o->data, o->model, o->tok_path, o->shots_from};
    if (cli_check_output("eval-choice", "predictions", o->predictions, inputs, 4)) return 2;
    if (cli_precision_ready("eval-choice", o->precision, !o->json)) return 2;
    return -1;
}

static int eval_choice(int argc, char **argv) {
    Options o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    o.threads = compute_threads_setup(o.threads, NULL, 0);
    GPT *m = NULL;
    Tokenizer *tok = NULL;
    ChoiceSet *d = NULL, *pool = NULL;
    TokenVec sep = {0};
    rc = cli_load_lm(o.model, o.tok_path, o.precision, &m, &tok);
    if (!rc) rc = !(d = choice_load(o.data, tok, m->cfg.n_ctx));
    if (!rc && o.shots_from && !same_file(o.shots_from, o.data)) /* else --data's own pool: never the record itself */
        rc = !(pool = choice_load(o.shots_from, tok, m->cfg.n_ctx));
    if (!rc) rc = tokenizer_encode(tok, (const uint8_t *)o.separator, strlen(o.separator), 0, &sep);
    ChoicePromptOptions po = {.shots = o.shots, .pool = pool ? pool : d, .pool_is_data = !pool,
                              .separator = sep.ids, .n_separator = (int)sep.n, .seed = o.seed,
                              .n_ctx = m ? m->cfg.n_ctx : 0, .eot = tok ? tokenizer_special_id(tok, TOK_EOT) : -1};
    if (!rc) rc = choice_check_shots(&po);
    if (dist_agree(rc)) {
        rc = cli_fail("eval-choice");
        goto out;
    }
    Results R;
    results_init(&R, d);
    ChoiceScorer *scorer = choice_scorer_create(&m->cfg);
    TokenVec prompt = {0};
    double t0 = now_seconds();
    for (int64_t i = dist_rank(); i < d->n; i += dist_size()) {
        ChoicePromptInfo info;
        choice_prompt(&po, &d->rec[i], i, &prompt, &info);
        choice_score(m, scorer, prompt.ids, (int)prompt.n, &d->rec[i], !o.no_cache, R.sums + R.offset[i]);
        R.shots_used[i] = info.shots_used, R.cut[i] = info.cut;
    }
    dist_sum(R.values, (size_t)(d->n_endings + 2 * d->n));
    double secs = now_seconds() - t0;
    if (dist_rank() == 0) {
        Summary s = summarise(d, &R, o.shots);
        rc = o.predictions ? write_predictions(&o, d, &po, &R) : 0;
        if (!rc) report(&o, d, &s, secs);
    }
    rc = dist_agree(rc) ? cli_fail("eval-choice") : 0;
    free(prompt.ids);
    choice_scorer_free(scorer);
    free(R.offset);
    free(R.values);
out:
    free(sep.ids);
    choice_free(pool);
    choice_free(d);
    tokenizer_free(tok);
    gpt_free(m);
    return rc;
}

int cmd_eval_choice(int argc, char **argv) {
    int rc = eval_choice(argc, argv);
    dist_finalize();
    return rc;
}
