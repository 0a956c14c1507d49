/* plan.c: `gpt plan`, a training layout for a cluster: memory a rank, tokens/s, time
 * (run/plan.h has the models; docs/operations.md, "Planning a run"). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "cli/cli.h"
#include "files/model_file.h"
#include "model/config.h"
#include "model/model.h"
#include "run/plan.h"

/* Exit status of a plan in which the layout asked for (or every layout) does not fit
 * --mem: the plan and what would fit are printed (docs/operations.md). */
#define PLAN_EXIT_DOES_NOT_FIT 3

typedef struct {
    ConfigArgs model;
    int batch, accum, nodes, cores, ranks_per_node, threads, shard, async_ckpt, json, recalibrate;
    long global_batch;
    double mem, link, tokens;
    Precision precision;
    GradReduce grad_reduce;
    const char *calibration;
} PlanArgs;

#define O(field) offsetof(PlanArgs, field)

static const CliOpt plan_opts[] = {
    {.name = "nodes", .kind = CLI_INT, .offset = O(nodes), .flags = CLI_MIN | CLI_REQUIRED, .min = 1, .metavar = "N",
     .help = "nodes"},
    {.name = "cores", .kind = CLI_INT, .offset = O(cores), .flags = CLI_MIN | CLI_REQUIRED, .min = 1, .metavar = "C",
     .help = "cores a node"},
    {.name = "mem", .kind = CLI_DOUBLE, .offset = O(mem), .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "GB",
     .help = "memory a node the ranks may use, GiB", .dflt = "not limited"},
    {.name = "link", .kind = CLI_DOUBLE, .offset = O(link), .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "RATE",
     .help = "each node's link, Gbit/s (needed for more than one node)"},
    {.name = "tokens", .kind = CLI_DOUBLE, .offset = O(tokens), .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "N",
     .help = "tokens to train: the time they take (1e10 and 10000000000 alike)"},
    {.name = "batch", .kind = CLI_INT, .offset = O(batch), .flags = CLI_MIN, .min = 1, .metavar = "B",
     .help = "windows a micro-step a rank (gpt train --batch)"},
    {.name = "accum", .kind = CLI_INT, .offset = O(accum), .flags = CLI_MIN, .min = 1, .metavar = "K",
     .help = "micro-steps a step (gpt train --accum)", .dflt = "1, or what --global-batch needs"},
    {.name = "global-batch", .kind = CLI_LONG, .offset = O(global_batch), .flags = CLI_MIN, .min = 1,
     .metavar = "G", .help = "windows a step over all ranks to reach: --accum = ceil(G / (ranks x B))"},
    {.name = "ranks-per-node", .kind = CLI_INT, .offset = O(ranks_per_node), .flags = CLI_MIN, .min = 1,
     .metavar = "R", .help = "force the ranks a node (dividing --cores)", .dflt = "chosen"},
    {.name = "threads", .kind = CLI_INT, .offset = O(threads), .flags = CLI_MIN, .min = 1, .metavar = "T",
     .help = "force the threads a rank", .dflt = "--cores / R"},
    {.name = "shard-optimizer", .kind = CLI_FLAG, .offset = O(shard),
     .help = "force ZeRO-1 (else chosen: only where it is needed to fit)"},
    {.name = "async-ckpt", .kind = CLI_FLAG, .offset = O(async_ckpt),
     .help = "count --async-ckpt's staging copy"},
    {.name = "grad-reduce", .kind = CLI_CHOICE, .offset = O(grad_reduce), .choices = grad_reduce_names,
     .metavar = "fp32|bf16", .help = "the gradients on the wire (gpt train --grad-reduce)"},
    {.name = "calibration", .kind = CLI_STRING, .offset = O(calibration), .metavar = "FILE",
     .help = "the compute speed from `gpt bench --json` on the target node", .dflt = "calibrated on this machine"},
    {.name = "recalibrate", .kind = CLI_FLAG, .offset = O(recalibrate),
     .help = "time the model on this machine again, not from the cache"},
    {.name = "json", .kind = CLI_FLAG, .offset = O(json), .help = "print one JSON object"},
    {.kind = CLI_GROUP, .group = cli_precision_opts, .offset = O(precision)},
    {.kind = CLI_GROUP, .group = cli_config_opts, .offset = O(model),
     .help = "model options (--model PRESET or MODEL.h5 is required; a file's shape is its own)"},
    CLI_END};

static const CliCommand plan_cmd = {
    .name = "plan", .opts = plan_opts, .size = sizeof(PlanArgs),
    .about = "Plans pre-training a model on N nodes of C cores: the layout (ranks a node x threads,\n"
             "--shard-optimizer or not, --accum for --global-batch), the fastest that fits --mem, or the\n"
             "one forced; each rank's memory by part (as gpt train allocates it), tokens/s, the time\n"
             "for --tokens and the share of a step spent waiting for the network.\n"
             "Compute speed: one layer of the model's shapes timed on this machine for a few seconds\n"
             "(cached in $XDG_CACHE_HOME/gpt, default ~/.cache/gpt), or --calibration FILE from\n"
             "`gpt bench --json` on the target node; threads beyond those measured are extrapolated\n"
             "(x T^0.85). Network: docs/scaling.md's model at --link (eta 0.5, alpha 125 us).\n"
             "Exit 3 when the layout does not fit --mem: the plan then lists what would fit.\n"};

static double mib(double bytes) { return bytes / 1048576.0; }

static json_t *memory_json(const PlanMemory *m) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "parameters_mb", mib(m->params), "moments_mb",
                     mib(m->moments), "gradients_mb", mib(m->grads), "activations_mb", mib(m->acts), "bf16_mb",
                     mib(m->bf16), "mpi_buffers_mb", mib(m->mpi), "checkpoint_staging_mb", mib(m->staging),
                     "baseline_mb", mib(m->baseline));
}

static json_t *layout_json(const PlanLayout *l, const PlanInput *in) {
    json_t *o = json_pack("{s:i,s:i,s:i,s:b,s:i,s:i,s:I,s:o,s:f,s:o,s:b,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "nodes",
                          l->nodes, "ranks_per_node", l->ranks_per_node, "threads", l->threads, "shard_optimizer",
                          l->shard, "batch", l->batch, "accum", l->accum, "global_batch", (json_int_t)l->global_batch,
                          "memory_per_rank_mb", json_real_or_null(mib(l->mem.total)), "memory_per_node_mb",
                          mib(l->mem.total * l->ranks_per_node), "memory", memory_json(&l->mem), "fits", l->fits,
                          "tokens_per_s", json_real_or_null(l->tokens_per_s), "step_s", json_real_or_null(l->step_s),
                          "compute_s", json_real_or_null(l->accum * l->micro_s + l->update_s), "allreduce_s",
                          json_real_or_null(l->allreduce_s), "comm_wait_s", json_real_or_null(l->wait_s),
                          "comm_share", json_real_or_null(l->comm_share), "efficiency",
                          json_real_or_null(l->efficiency));
    if (in->tokens > 0) json_object_set_new(o, "hours", json_real_or_null(l->hours));
    json_object_set_new(o, "calibration", json_string(l->speed.source));
    json_object_set_new(o, "calibration_threads", json_integer(l->speed.extrapolated_from ? l->speed.extrapolated_from
                                                                                           : l->speed.threads));
    json_object_set_new(o, "extrapolated", json_boolean(l->speed.extrapolated_from != 0));
    return o;
}

static void print_layout(const PlanLayout *l, const PlanInput *in) {
    const PlanMemory *m = &l->mem;
    int P = l->nodes * l->ranks_per_node;
    printf("layout: %d node(s) x %d rank(s) x %d thread(s)%s, batch %d x accum %d x %d rank(s) = %ld windows "
           "(%.0f tokens) a step\n", l->nodes, l->ranks_per_node, l->threads,
           l->shard ? ", --shard-optimizer" : P > 1 ? ", optimizer not sharded" : "", l->batch, l->accum, P,
           l->global_batch, (double)l->global_batch * in->cfg.n_ctx);
    printf("memory a rank: %.0f MiB = parameters %.0f + Adam moments %.0f + gradients %.0f + activations %.0f",
           mib(m->total), mib(m->params), mib(m->moments), mib(m->grads), mib(m->acts));
    if (m->bf16 > 0) printf(" + bf16 copy and scratch %.0f", mib(m->bf16));
    printf(" + MPI buffers %.0f", mib(m->mpi));
    if (in->async_ckpt) printf(" + checkpoint staging %.0f", mib(m->staging));
    printf(" + process %.0f; a node %.0f MiB", mib(m->baseline), mib(m->total * l->ranks_per_node));
    if (in->mem_gib > 0) printf(" of %.0f: %s", in->mem_gib * 1024.0, l->fits ? "fits" : "DOES NOT FIT");
    printf("\n");
    printf("compute: a micro-step %.3f s (%d layers x %.3g s + head %.3g s), the update %.3f s\n", l->micro_s,
           in->cfg.n_layer, l->speed.layer_tok_s * l->batch * in->cfg.n_ctx,
           l->speed.head_tok_s * l->batch * in->cfg.n_ctx, l->update_s);
    printf("  speed: %s", l->speed.source);
    if (l->speed.extrapolated_from)
        printf("; EXTRAPOLATED to %d threads from %d: x (%d/%d)^%.2f", l->threads, l->speed.extrapolated_from,
               l->threads, l->speed.extrapolated_from, PLAN_THREAD_EXPONENT);
    printf("\n");
    if (P > 1)
        printf("communication: allreduce %.3f s, embedding rows %.3f s, wait after the backward pass %.3f s: "
               "%.1f%% of a step (docs/scaling.md's model, %s)\n", l->allreduce_s, l->rows_s, l->wait_s,
               100.0 * l->comm_share, l->nodes > 1 ? "the node's link shared by its ranks" : "in the node's memory");
    else
        printf("communication: none (one rank)\n");
    printf("speed: a step %.3f s, %.0f tokens/s (%.1f%% computing)\n", l->step_s, l->tokens_per_s,
           100.0 * l->efficiency);
    if (in->tokens > 0)
        printf("time for %.3g tokens: %.1f hours (%.1f days)\n", in->tokens, l->hours, l->hours / 24.0);
}

int cmd_plan(int argc, char **argv) {
    PlanArgs a = {.batch = 8};
    int first, rc = cli_parse(&plan_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    PlanInput in = {.model = a.model.preset, .batch = a.batch, .accum = a.accum, .global_batch = a.global_batch,
                    .precision = a.precision, .grad_reduce = a.grad_reduce, .async_ckpt = a.async_ckpt,
                    .nodes = a.nodes, .cores = a.cores, .mem_gib = a.mem, .link_gbit = a.link, .tokens = a.tokens,
                    .ranks_per_node = a.ranks_per_node, .threads = a.threads, .shard = a.shard,
                    .calibration = a.calibration, .recalibrate = a.recalibrate, .quiet = a.json};
    GPTConfig probe;
    if (a.model.preset && config_preset(a.model.preset, &probe) && access(a.model.preset, F_OK) == 0) {
        /* MODEL.h5: its shape; only dropout may change (as gpt train --init) */
        ConfigArgs rest = a.model;
        rest.preset = NULL;
        if (!config_args_dropout_only(&rest))
            return cli_usage_error("plan", "--model %s is a file: its shape is its own (only dropout options may "
                                   "go with it)", a.model.preset);
        if (model_file_read_config(a.model.preset, &in.cfg)) return cli_fail("plan");
    } else if (config_from_args(&a.model, &in.cfg)) {
        return cli_usage_error("plan", "%s", gpt_last_error());
    }
    if (a.accum && a.global_batch) return cli_usage_error("plan", "--accum and --global-batch exclude each other");
    if (cli_precision_ready("plan", a.precision, 0)) return 2;
    Plan p;
    if (plan_make(&in, &p)) {
        const char *e = gpt_last_error();
        return strncmp(e, "--", 2) ? cli_fail("plan") : cli_usage_error("plan", "%s", e);
    }
    size_t n_params = gpt_memory(&in.cfg, 0, 0, 1, PRECISION_FP32).n_params;
    int fits = p.best.fits;
    if (a.json) {
        json_t *o = layout_json(&p.best, &in);
        json_object_set_new(o, "model", json_string(a.model.preset));
        json_object_set_new(o, "params", json_integer((json_int_t)n_params));
        json_object_set_new(o, "precision", json_string(precision_name(in.precision)));
        json_object_set_new(o, "cores", json_integer(in.cores));
        json_object_set_new(o, "forced", json_boolean(in.ranks_per_node || in.threads));
        if (in.mem_gib > 0) json_object_set_new(o, "mem_gib", json_real(in.mem_gib));
        if (in.link_gbit > 0) json_object_set_new(o, "link_gbit", json_real(in.link_gbit));
        if (in.tokens > 0) json_object_set_new(o, "tokens", json_real(in.tokens));
        json_t *alts = json_array();
        for (int i = 0; i < p.n_alt; i++) {
            json_t *x = layout_json(&p.alt[i], &in);
            json_object_set_new(x, "change", json_string(p.alt_why[i]));
            json_array_append_new(alts, x);
        }
        json_object_set_new(o, "alternatives", alts);
        cli_print_json(o);
    } else {
        printf("plan: %s, %zu parameters, batch %d x %d tokens, %s, %d node(s) x %d core(s)", a.model.preset,
               n_params, in.batch, in.cfg.n_ctx, precision_name(in.precision), in.nodes, in.cores);
        if (in.mem_gib > 0) printf(", %g GiB", in.mem_gib);
        if (in.link_gbit > 0) printf(", %g Gbit/s", in.link_gbit);
        printf("\n%s", fits ? (in.ranks_per_node || in.threads ? "forced " : "recommended ")
                            : "DOES NOT FIT --mem: ");
        print_layout(&p.best, &in);
        if (!fits) {
            if (p.n_alt) printf("\nwhat would fit:\n");
            else printf("\nnothing fits: not --batch 1 with any ranks a node, sharded or not%s\n",
                        in.link_gbit > 0 ? ", nor on up to 4096 nodes" : " (--link: more nodes)");
            for (int i = 0; i < p.n_alt; i++) {
                printf("- %s: ", p.alt_why[i]);
                print_layout(&p.alt[i], &in);
            }
        }
    }
    return fits ? 0 : PLAN_EXIT_DOES_NOT_FIT;
}
