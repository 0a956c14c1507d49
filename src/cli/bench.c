/* bench.c: `gpt bench`, training speed and memory on synthetic tokens.
 *
 * The machine's matrix-multiply limit is measured in the same process with the same
 * BLAS threads (blas_sgemm_peak_gflops; in bf16 also bf16_peak_gflops on the bf16 path),
 * so the model FLOP rate can be reported as a fraction of it (MFU) whatever the core type
 * OpenBLAS picked. */
#include <stdio.h>
#include <stdlib.h>

#include "base/rng.h"
#include "base/util.h"
#include "cli/cli.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "model/config.h"
#include "model/model.h"
#include "model/optim.h"

typedef struct {
    ConfigArgs model;
    int batch, steps, warmup, threads, json;
    uint64_t seed;
    Precision precision;
} BenchArgs;

#define B(field) offsetof(BenchArgs, field)

static const CliOpt bench_opts[] = {
    {.name = "batch", .kind = CLI_INT, .offset = B(batch), .flags = CLI_MIN, .min = 1, .metavar = "B",
     .help = "sequences a step"},
    {.name = "steps", .kind = CLI_INT, .offset = B(steps), .flags = CLI_MIN, .min = 1, .metavar = "N",
     .help = "timed steps"},
    {.name = "warmup-steps", .kind = CLI_INT, .offset = B(warmup), .flags = CLI_MIN, .metavar = "W",
     .help = "untimed steps first"},
    {.name = "threads", .kind = CLI_INT, .offset = B(threads), .flags = CLI_MIN, .min = 1, .metavar = "T",
     .help = "compute threads"},
    {.name = "seed", .kind = CLI_U64, .offset = B(seed), .metavar = "S", .help = "of the weights and tokens"},
    {.name = "json", .kind = CLI_FLAG, .offset = B(json), .help = "print one JSON object"},
    {.kind = CLI_GROUP, .group = cli_precision_opts, .offset = B(precision)},
    {.kind = CLI_GROUP, .group = cli_config_opts, .offset = B(model), .help = "model options (--model is required)"},
    CLI_END};

static const CliCommand bench_cmd = {
    .name = "bench", .opts = bench_opts, .size = sizeof(BenchArgs),
    .about = "Trains on random tokens (AdamW, dropout as configured) and reports tokens/s,\n"
             "model GFLOP/s (6N + 12 L C n_ctx per token), the cblas_sgemm peak measured in\n"
             "the same run with the same threads, MFU, peak RSS, the kernel set (GPT_KERNELS\n"
             "forces avx2 or avx512) and OpenBLAS's core type (OPENBLAS_CORETYPE forces one).\n"
             "--precision bf16: MFU against the bf16 product peak measured on the same path (oneDNN\n"
             "on AMX, else emulated; GPT_MATMUL forces one).\n"};

int cmd_bench(int argc, char **argv) {
    BenchArgs a = {.batch = 4, .steps = 5, .warmup = 1, .threads = 1, .seed = 1};
    int first, rc = cli_parse(&bench_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    GPTConfig cfg;
    if (config_from_args(&a.model, &cfg)) return cli_usage_error("bench", "%s", gpt_last_error());
    int batch = a.batch, steps = a.steps, warmup = a.warmup, threads = a.threads, json = a.json;
    uint64_t seed = a.seed;
    Precision precision = a.precision;

    if (cli_precision_ready("bench", precision, 0)) return 2;
    compute_threads_set(threads);
    double sgemm_peak = blas_sgemm_peak_gflops();
    double peak = precision == PRECISION_BF16 ? bf16_peak_gflops() : sgemm_peak;

    int B = batch, T = cfg.n_ctx;
    GPT *m = gpt_create(&cfg, B, 1);
    gpt_init_weights(m, seed, 0.02f, 0);
    gpt_set_precision(m, precision);
    OptimConfig oc = optim_defaults(warmup + steps);
    oc.warmup = 0;
    AdamW *o = adamw_create(&oc, m->n_params);
    int *tokens = xmalloc((size_t)B * (T + 1) * sizeof(int));
    int *inputs = xmalloc((size_t)B * T * sizeof(int)), *targets = xmalloc((size_t)B * T * sizeof(int));
    uint64_t *keys = xmalloc((size_t)B * sizeof(uint64_t));
    Rng r;
    rng_seed(&r, seed);

    double t_fb = 0.0, t_opt = 0.0, loss = 0.0;
    for (int s = 0; s < warmup + steps; s++) {
        for (int b = 0; b < B; b++) {
            for (int t = 0; t <= T; t++) tokens[b * (T + 1) + t] = (int)(rng_next(&r) % (uint64_t)cfg.vocab_size);
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = tokens[b * (T + 1) + t];
                targets[b * T + t] = tokens[b * (T + 1) + t + 1];
            }
            keys[b] = rng_key(seed, (uint64_t)s * B + b);
        }
        double t0 = now_seconds();
        gpt_zero_grad(m);
        loss = gpt_forward_backward(m, inputs, targets, B, T, keys, 1.0f / (float)(B * T));
        double t1 = now_seconds();
        adamw_step(o, m->params, m->grads, m->tensors, m->n_tensors);
        gpt_weights_changed(m); /* in bf16 the next forward pass remakes the copy: timed there */
        double t2 = now_seconds();
        if (s >= warmup) t_fb += t1 - t0, t_opt += t2 - t1;
        if (!json) fprintf(stderr, "step %d/%d: loss %.4f, %.3f s%s\n", s + 1, warmup + steps, loss, t2 - t0, s < warmup ? " (warm-up, untimed)" : "");
    }
    double step_s = (t_fb + t_opt) / steps;
    double tok_s = (double)B * T / step_s;
    double gflops = tok_s * gpt_train_flops_per_token(&cfg) / 1e9;
    const char *core = blas_core_name(), *origin = blas_core_origin();
    if (json) {
        json_t *result = json_pack("{s:s,s:i,s:i,s:i,s:i,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:s,s:s,s:o}",
                                 "model", a.model.preset, "batch", B, "n_ctx", T, "threads", threads, "steps", steps,
                                 "params", (json_int_t)m->n_params, "tokens_per_s", json_real_or_null(tok_s), "step_s",
                                 json_real_or_null(step_s), "fwdbwd_s", json_real_or_null(t_fb / steps), "optim_s",
                                 json_real_or_null(t_opt / steps), "model_gflops", json_real_or_null(gflops),
                                 "sgemm_peak_gflops", json_real_or_null(sgemm_peak), "mfu", json_real_or_null(gflops / peak),
                                 "peak_rss_mb", json_real_or_null(peak_rss_mb()), "openblas_core", core,
                                 "openblas_core_origin", origin, "loss", json_real_or_null(loss));
        json_object_set_new(result, "kernels", json_string(kernels_name()));
        json_object_set_new(result, "precision", json_string(precision_name(precision)));
        if (precision == PRECISION_BF16) {
            json_object_set_new(result, "bf16_path", json_string(bf16_path_description()));
            json_object_set_new(result, "bf16_peak_gflops", json_real_or_null(peak));
        }
        cli_print_json(result);
    } else {
        printf("model %s: %zu parameters, batch %d x %d tokens, %d thread(s), kernels %s, OpenBLAS core %s (%s), "
               "%s\n", a.model.preset, m->n_params, B, T, threads, kernels_name(), core, origin,
               precision_description(precision));
        printf("step %.3f s (forward+backward %.3f s, AdamW %.3f s): %.1f tokens/s\n", step_s,
               t_fb / steps, t_opt / steps, tok_s);
        printf("model %.1f GFLOP/s of %s peak %.1f GFLOP/s: MFU %.1f%%; peak RSS %.0f MiB\n", gflops,
               precision == PRECISION_BF16 ? "bf16 product" : "sgemm", peak, 100.0 * gflops / peak, peak_rss_mb());
    }
    free(tokens);
    free(inputs);
    free(targets);
    free(keys);
    adamw_free(o);
    gpt_free(m);
    return 0;
}
