/* plan.c: `gpt plan`'s memory, speed and layout models (see plan.h; docs/operations.md). */
#include "run/plan.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic.h"
#include "base/hashmap.h"
#include "base/util.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "files/checkpoint_writer.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/shard.h"
#include "model/speed.h"

#define MIB 1048576.0

/* ---- memory ---- */

PlanMemory plan_memory(const PlanInput *in, int R, int T, int shard, int batch, int accum) {
    const GPTConfig *c = &in->cfg;
    int P = in->nodes * R;
    PlanMemory m = {0};
    GPTMemory g = gpt_memory(c, batch, 1, T, in->precision);
    size_t n = g.n_params, share = P > 1 ? shard_sizes(c, P).largest : n;
    m.params = (double)g.params;
    m.grads = (double)g.grads;
    m.acts = (double)g.acts;
    m.bf16 = (double)(g.bf16_copy + g.bf16_scratch_bytes);
    m.moments = (double)adamw_bytes(shard && P > 1 ? share : n);
    m.mpi = (double)gradsync_wire_bytes(n, P, in->grad_reduce);
    if (P > 1) {
        double piece = (double)((size_t)GRADSYNC_PIECE_MB << 20);
        double S = (double)n * (in->grad_reduce == GRAD_REDUCE_BF16 ? 2 : 4);
        m.mpi += PLAN_MPI_PIECES * (S < piece ? S : piece);
        /* the tied embedding's token rows (docs/scaling.md's X): a rank's rows and their
         * copy to send, and the owners' received rows and sums, fp32; with bf16 on the
         * wire, a bf16 copy of what is sent and of what is received (rowsum.c) */
        double rows = fmin(c->vocab_size, (double)accum * batch * c->n_ctx);
        double all = fmin(c->vocab_size, (double)P * accum * batch * c->n_ctx);
        double copies = in->grad_reduce == GRAD_REDUCE_BF16 ? 2.5 : 2.0; /* in floats */
        m.mpi += copies * (rows + all) * c->n_embd * sizeof(float);
        /* sharded: the next step's wte rows (b T of them), fetched through rowsum's
         * buffers (those asked for, and those asked of it, about as many) */
        if (shard) m.mpi += 3.0 * batch * c->n_ctx * c->n_embd * sizeof(float);
    }
    m.staging = in->async_ckpt ? (double)ckpt_writer_stage_bytes(share) : 0.0;
    m.baseline = PLAN_BASELINE_MB * MIB;
    m.total = m.params + m.grads + m.moments + m.acts + m.bf16 + m.mpi + m.staging + m.baseline;
    return m;
}

/* ---- calibration ---- */

/* The calibration's batch: b cut to PLAN_CALIBRATION_TOKENS (at least one window). */
static int calibration_batch(const PlanInput *in) {
    int b = PLAN_CALIBRATION_TOKENS / in->cfg.n_ctx;
    if (b < 1) b = 1;
    return b < in->batch ? b : in->batch;
}

/* Reads a number field of a calibration object; NAN when missing. */
static double num(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A `gpt bench --json` object into per-token speeds, checked against the model's shapes;
 * what names the file in messages. */
static int speed_from_json(json_t *o, const PlanInput *in, const char *what, PlanSpeed *s) {
    const GPTConfig *c = &in->cfg;
    static const char *const need[] = {"n_layer", "n_head", "n_embd", "n_ctx", "vocab_size", "n_ffn", "batch",
                                       "threads", "params", "forward_s", "head_s", "backward_s", "optim_s"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!isfinite(num(o, need[i])) || num(o, need[i]) < 0)
            return gpt_error("%s: no number \"%s\": not what gpt bench --json writes (run `gpt bench --model ... "
                             "--batch B --threads T --json > FILE` on the target node)", what, need[i]);
    const struct {
        const char *key;
        int want;
    } shape[] = {{"n_head", c->n_head}, {"n_embd", c->n_embd}, {"n_ctx", c->n_ctx}, {"vocab_size", c->vocab_size},
                 {"n_ffn", c->n_ffn}};
    for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++)
        if ((int)num(o, shape[i].key) != shape[i].want)
            return gpt_error("%s: measured with %s %d, the plan's model has %d (a calibration serves a model of "
                             "the same shapes but for n_layer)", what, shape[i].key, (int)num(o, shape[i].key),
                             shape[i].want);
    json_t *p = json_object_get(o, "precision");
    const char *prec = json_is_string(p) ? json_string_value(p) : "fp32";
    if (strcmp(prec, precision_name(in->precision)))
        return gpt_error("%s: measured in %s, the plan is for %s", what, prec, precision_name(in->precision));
    json_t *ln = json_object_get(o, "ln");
    if (json_is_string(ln) && strcmp(json_string_value(ln), config_ln_name(c->ln)))
        return gpt_error("%s: measured with --ln %s, the plan's model has %s", what, json_string_value(ln),
                         config_ln_name(c->ln));
    double tokens = num(o, "batch") * num(o, "n_ctx");
    if (tokens <= 0 || num(o, "n_layer") < 1 || num(o, "params") < 1 || num(o, "threads") < 1)
        return gpt_error("%s: batch, n_layer, params and threads must be positive", what);
    s->layer_tok_s = (num(o, "forward_s") + num(o, "backward_s")) / num(o, "n_layer") / tokens;
    s->head_tok_s = num(o, "head_s") / tokens;
    s->update_param_s = num(o, "optim_s") / num(o, "params");
    s->threads = (int)num(o, "threads");
    return 0;
}

/* $XDG_CACHE_HOME/gpt, else ~/.cache/gpt, made if missing; 0 with dir empty: no cache. */
static void cache_dir(char *dir, size_t size) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char base[4096];
    dir[0] = '\0';
    if (xdg && *xdg) snprintf(base, sizeof base, "%s", xdg);
    else if (home && *home) snprintf(base, sizeof base, "%s/.cache", home);
    else return;
    mkdir(base, 0755);
    if ((size_t)snprintf(dir, size, "%s/gpt", base) >= size) dir[0] = '\0';
    else if (mkdir(dir, 0755) && errno != EEXIST) dir[0] = '\0';
}

typedef struct {
    int quiet;
    const char *what;
} Progress;

static void calibration_step(void *ctx, int step, int total, double loss, double seconds, int timed) {
    const Progress *p = ctx;
    (void)loss, (void)timed;
    if (!p->quiet) fprintf(stderr, "gpt plan: calibrating %s: step %d/%d, %.2f s\n", p->what, step, total, seconds);
}

/* The calibration o cached at path, whole or not at all (base/atomic.h); -1 if not. */
static int cache_write(json_t *o, const char *path) {
    AtomicFile f;
    if (atomic_open(&f, path)) return -1;
    if (json_dumpf(o, f.f, JSON_COMPACT)) return atomic_abort(&f), -1;
    return atomic_commit(&f);
}

/* One layer of the model's shapes, timed on this machine at T threads (or read from the
 * cache). */
static int calibrate_here(const PlanInput *in, int T, PlanSpeed *s) {
    GPTConfig one = in->cfg;
    one.n_layer = 1;
    int b = calibration_batch(in);
    const char *cpu = cpu_model_name();
    char key[1024], dir[4096], path[4300] = "";
    snprintf(key, sizeof key, "v1|%s|%s|%s|L1 H%d C%d T%d V%d F%d %s|b%d|t%d|%s", cpu, kernels_name(), blas_core_name(),
             one.n_head, one.n_embd, one.n_ctx, one.vocab_size, one.n_ffn, config_ln_name(one.ln), b, T,
             in->precision == PRECISION_BF16 ? precision_description(in->precision) : "fp32");
    cache_dir(dir, sizeof dir);
    if (dir[0])
        snprintf(path, sizeof path, "%s/calibration-%016llx.json", dir,
                 (unsigned long long)hash_bytes((const uint8_t *)key, strlen(key)));
    json_t *o = path[0] && !in->recalibrate ? json_load_file(path, 0, NULL) : NULL;
    json_t *k = o ? json_object_get(o, "key") : NULL;
    if (o && !(json_is_string(k) && !strcmp(json_string_value(k), key))) json_decref(o), o = NULL;
    int cached = o != NULL;
    if (!o) {
        int was = compute_threads();
        compute_threads_set(T);
        GPT *m = gpt_create(&one, b, 1);
        gpt_init_weights(m, 1, 0.02f, 0);
        gpt_set_precision(m, in->precision);
        char what[128];
        snprintf(what, sizeof what, "one layer at batch %d, %d thread(s)", b, T);
        Progress pr = {in->quiet, what};
        /* a first step (warm-up, and how long a step is), then enough for about 2 s */
        StepTimes first = gpt_time_steps(m, b, 0, 1, 1, calibration_step, &pr);
        double step = first.forward_s + first.head_s + first.backward_s + first.optim_s;
        int steps = step > 1.0 ? 1 : step > 0.5 ? 2 : 3;
        StepTimes st = gpt_time_steps(m, b, 0, steps, 2, calibration_step, &pr);
        o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:f,s:f,s:f,s:f,s:s,s:s,s:s}", "key", key, "cpu",
                      cpu, "n_layer", 1, "n_head", one.n_head, "n_embd", one.n_embd, "n_ctx", one.n_ctx,
                      "vocab_size", one.vocab_size, "n_ffn", one.n_ffn, "batch", b, "threads", T, "params",
                      (json_int_t)m->n_params, "forward_s", st.forward_s, "head_s", st.head_s, "backward_s",
                      st.backward_s, "optim_s", st.optim_s, "ln", config_ln_name(one.ln), "precision",
                      precision_name(in->precision), "kernels", kernels_name());
        gpt_free(m);
        compute_threads_set(was);
        if (path[0] && cache_write(o, path)) path[0] = '\0'; /* not cached: the plan goes on */
    }
    int rc = speed_from_json(o, in, path[0] ? path : "the calibration", s);
    json_decref(o);
    if (rc) return rc;
    snprintf(s->source, sizeof s->source, "%s on this machine (%s, %d thread(s), one layer at batch %d)%s%s",
             cached ? "calibrated earlier" : "calibrated", cpu, T, b, path[0] ? ", cached in " : " (not cached)", path);
    return 0;
}

/* The speeds measured: this machine's at every thread count up to its cores (each
 * measured once, when a layout needs it), or a file's at one. */
typedef struct {
    const PlanInput *in;
    int have_file;
    PlanSpeed file;
    int max_here;
    PlanSpeed here[512];
    int measured[512];
} Speeds;

static int speed_at(Speeds *sp, int T, PlanSpeed *out) {
    PlanSpeed base;
    if (sp->have_file) {
        base = sp->file;
    } else {
        int at = T < sp->max_here ? T : sp->max_here;
        if (!sp->measured[at]) {
            if (calibrate_here(sp->in, at, &sp->here[at])) return -1;
            sp->measured[at] = 1;
        }
        base = sp->here[at];
    }
    *out = base;
    if (T != base.threads) { /* extrapolated: plan.h's PLAN_THREAD_EXPONENT */
        double f = pow((double)base.threads / T, PLAN_THREAD_EXPONENT);
        out->layer_tok_s *= f, out->head_tok_s *= f, out->update_param_s *= f;
        out->extrapolated_from = base.threads;
        out->threads = T;
    }
    return 0;
}

/* ---- one layout ---- */

/* docs/scaling.md's f: the share of the parameters in the buckets that start only when
 * the backward pass ends: wpe and layer 0's attention half (ln_1, c_attn, attn.c_proj). */
static double tail_share(const GPTConfig *c) {
    int n_tensors;
    size_t n;
    GPTTensor *t = gpt_tensor_table(c, &n_tensors, &n);
    double tail = (double)t[1].numel; /* wpe */
    for (int i = 2; i < 2 + 6 && i < n_tensors; i++) tail += (double)t[i].numel;
    free(t);
    return tail / (double)n;
}

static int layout(Speeds *sp, const PlanInput *in, int R, int T, int shard, int batch, PlanLayout *l) {
    const GPTConfig *c = &in->cfg;
    int P = in->nodes * R;
    memset(l, 0, sizeof *l);
    l->nodes = in->nodes, l->ranks_per_node = R, l->threads = T, l->shard = shard && P > 1, l->batch = batch;
    l->accum = in->accum ? in->accum : 1;
    if (!in->accum && in->global_batch > 0)
        l->accum = (int)((in->global_batch + (long)P * batch - 1) / ((long)P * batch));
    l->global_batch = (long)P * batch * l->accum;
    l->mem = plan_memory(in, R, T, l->shard, batch, l->accum);
    l->fits = in->mem_gib <= 0 || l->mem.total * R <= in->mem_gib * 1073741824.0;
    if (speed_at(sp, T, &l->speed)) return -1;
    size_t n = gpt_memory(c, 0, 0, 1, PRECISION_FP32).n_params;
    double tokens = (double)batch * c->n_ctx, k = l->accum;
    l->micro_s = tokens * (c->n_layer * l->speed.layer_tok_s + l->speed.head_tok_s);
    ShardSizes sizes = l->shard ? shard_sizes(c, P) : (ShardSizes){n, 0};
    double updated = (double)sizes.largest;
    l->update_s = updated * l->speed.update_param_s;
    if (P > 1) {
        /* docs/scaling.md: the node's R ranks share its link; one node's reduce in memory */
        double rate = PLAN_ETA * (in->nodes > 1 ? in->link_gbit * 1e9 / 8.0 / R : PLAN_LOCAL_BYTES_S);
        double width = in->grad_reduce == GRAD_REDUCE_BF16 ? 2 : 4; /* bytes a gradient on the wire */
        l->allreduce_s = 2.0 * (P - 1) / P * width * (double)n / rate;
        l->rows_s = width * c->n_embd * fmin(c->vocab_size, (double)P * k * tokens) / rate;
        /* sharded (plan.h): the reduce-scatter behind the backward pass, then the fetch
         * of the batch's wte rows and the all-gather, fp32, behind the next forward pass
         * up to its head; each a ring whose P - 1 hops carry every segment's largest part */
        double moved = l->shard ? (P - 1) * width * (double)sizes.hop / rate : l->allreduce_s;
        double tail = tail_share(c) * moved + l->rows_s + 2.0 * (P - 1) * PLAN_ALPHA_S;
        double exposed = moved - PLAN_BACKWARD_SHARE * l->micro_s;
        l->wait_s = tail > exposed ? tail : exposed;
        if (l->shard) {
            double fetch = sizeof(float) * c->n_embd * fmin(c->vocab_size, tokens) * (P - 1) / P / rate;
            double gather = (P - 1) * sizeof(float) * (double)sizes.hop / rate;
            double trunk = (1.0 - PLAN_BACKWARD_SHARE) * tokens * c->n_layer * l->speed.layer_tok_s;
            l->wait_s += fetch + 2.0 * PLAN_ALPHA_S + fmax(0.0, gather - trunk);
        }
    }
    double compute = k * l->micro_s + l->update_s;
    l->step_s = compute + l->wait_s;
    l->tokens_per_s = (double)P * k * tokens / l->step_s;
    l->efficiency = compute / l->step_s;
    l->comm_share = l->wait_s / l->step_s;
    l->hours = in->tokens > 0 ? in->tokens / l->tokens_per_s / 3600.0 : 0.0;
    return 0;
}

/* ---- the search ---- */

/* The best layout of R ranks a node: unsharded if it fits, else sharded (or as forced). */
static int layout_for(Speeds *sp, const PlanInput *in, int R, int T, int batch, PlanLayout *l) {
    if (layout(sp, in, R, T, in->shard, batch, l)) return -1;
    if (!l->fits && !in->shard && in->nodes * R > 1) {
        PlanLayout s;
        if (layout(sp, in, R, T, 1, batch, &s)) return -1;
        if (s.fits) *l = s;
    }
    return 0;
}

/* The fastest layout that fits among the ranks a node that divide the cores (R only,
 * when forced); 0 when none fits. */
static int search(Speeds *sp, const PlanInput *in, int batch, int only_R, PlanLayout *best) {
    int found = 0;
    for (int R = 1; R <= in->cores; R++) {
        if (in->cores % R || (only_R && R != only_R)) continue;
        PlanLayout l;
        if (layout_for(sp, in, R, in->cores / R, batch, &l)) return -1;
        if (l.fits && (!found || l.tokens_per_s > best->tokens_per_s)) *best = l, found = 1;
    }
    return found;
}

/* An alternative: what it changes (the batch, the nodes, or neither: the ranks a node and
 * whether sharded are always named). */
static void add_alt(Plan *p, const PlanLayout *l, const char *fmt, int v) {
    if (p->n_alt >= PLAN_MAX_ALTERNATIVES) return;
    p->alt[p->n_alt] = *l;
    char what[64] = "";
    if (fmt) snprintf(what, sizeof what, fmt, v);
    snprintf(p->alt_why[p->n_alt], sizeof p->alt_why[0], "%s%s%d rank(s) a node%s", what, *what ? ", " : "",
             l->ranks_per_node, l->shard ? ", --shard-optimizer" : "");
    p->n_alt++;
}

int plan_make(const PlanInput *in, Plan *p) {
    memset(p, 0, sizeof *p);
    if (in->nodes > 1 && !(in->link_gbit > 0))
        return gpt_error("--link RATE is needed for more than one node (Gbit/s of each node's link)");
    if (in->ranks_per_node && in->cores % in->ranks_per_node)
        return gpt_error("--ranks-per-node %d does not divide --cores %d", in->ranks_per_node, in->cores);
    if (in->threads && in->ranks_per_node && in->threads * in->ranks_per_node > in->cores)
        return gpt_error("--ranks-per-node %d x --threads %d is more than --cores %d", in->ranks_per_node,
                         in->threads, in->cores);
    if (in->threads && !in->ranks_per_node && in->cores % in->threads)
        return gpt_error("--threads %d does not divide --cores %d", in->threads, in->cores);
    Speeds *sp = xcalloc(1, sizeof *sp);
    sp->in = in;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    sp->max_here = cores < 1 ? 1 : cores > 511 ? 511 : (int)cores;
    int rc = 0;
    if (in->calibration) {
        json_error_t err;
        json_t *o = json_load_file(in->calibration, 0, &err);
        if (!o || !json_is_object(o))
            rc = gpt_error("%s: not a JSON object from gpt bench --json (%s)", in->calibration, o ? "not an object" : err.text);
        else if (!(rc = speed_from_json(o, in, in->calibration, &sp->file))) {
            sp->have_file = 1;
            json_t *cpu = json_object_get(o, "cpu");
            snprintf(sp->file.source, sizeof sp->file.source, "%s (gpt bench on %s, %d thread(s))", in->calibration,
                     json_is_string(cpu) ? json_string_value(cpu) : "an unnamed CPU", sp->file.threads);
        }
        json_decref(o);
    }
    int forced = in->ranks_per_node || in->threads;
    if (!rc && forced) {
        int R = in->ranks_per_node ? in->ranks_per_node : in->cores / in->threads;
        int T = in->threads ? in->threads : in->cores / R;
        rc = layout_for(sp, in, R, T, in->batch, &p->best);
        p->any_fits = p->best.fits;
        PlanLayout l;
        if (!rc && !p->best.fits) { /* what would fit: the search, then fewer ranks */
            int f = search(sp, in, in->batch, 0, &l);
            if (f < 0) rc = -1;
            else if (f) add_alt(p, &l, NULL, 0);
        }
    } else if (!rc) {
        int f = search(sp, in, in->batch, 0, &p->best);
        if (f < 0) rc = -1;
        p->any_fits = f > 0;
        if (!rc && !f) rc = layout_for(sp, in, 1, in->cores, in->batch, &p->best); /* to show */
    }
    if (!rc && !p->best.fits) {
        PlanLayout l;
        /* a smaller batch: in the forced layout's ranks, else in any */
        for (int pass = forced ? 0 : 1, done = 0; pass < 2 && !done && !rc; pass++)
            for (int b = in->batch - 1; b >= 1 && !rc; b--) {
                int f = search(sp, in, b, pass == 0 ? p->best.ranks_per_node : 0, &l);
                if (f < 0) rc = -1;
                if (f > 0) {
                    add_alt(p, &l, "--batch %d", b);
                    done = 1;
                    break;
                }
            }
        /* more nodes, sharded: the moments shrink with the ranks */
        PlanInput more = *in;
        more.shard = 1;
        if (in->link_gbit > 0)
            for (int n = in->nodes * 2; n <= 4096 && !rc; n *= 2) {
                more.nodes = n;
                int f = search(sp, &more, in->batch, 0, &l);
                if (f < 0) rc = -1;
                if (f > 0) {
                    add_alt(p, &l, "%d nodes", n);
                    break;
                }
            }
    }
    free(sp);
    return rc;
}
