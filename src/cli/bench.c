/* bench.c: `gpt bench`, training speed and memory on synthetic tokens.
 *
 * The machine's matrix-multiply limit is measured in the same process with the same
 * BLAS threads (blas_sgemm_peak_gflops; in bf16 also bf16_peak_gflops on the bf16 path),
 * so the model FLOP rate can be reported as a fraction of it (MFU) whatever the core type
 * OpenBLAS picked. */
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "cli/cli.h"
#include "cpu/blas.h"
#include "cpu/threads.h"
#include "cpu/kernels.h"
#include "model/config.h"
#include "model/model.h"
#include "model/speed.h"

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
    CLI_THREADS_ROW(B(threads)),
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
             "on AMX, else emulated; GPT_MATMUL forces one).\n"
             "--json adds the step's parts (blocks forward, head, blocks backward, update), the\n"
             "model's shapes and the CPU: a calibration for gpt plan --calibration.\n"};

static void print_step(void *ctx, int step, int total, double loss, double seconds, int timed) {
    (void)ctx;
    fprintf(stderr, "step %d/%d: loss %.4f, %.3f s%s\n", step, total, loss, seconds, timed ? "" : " (warm-up, untimed)");
}

int cmd_bench(int argc, char **argv) {
    BenchArgs a = {.batch = 4, .steps = 5, .warmup = 1, .seed = 1};
    int first, rc = cli_parse(&bench_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    GPTConfig cfg;
    if (config_from_args(&a.model, &cfg)) return cli_usage_error("bench", "%s", gpt_last_error());
    int batch = a.batch, steps = a.steps, warmup = a.warmup, threads = a.threads, json = a.json;
    uint64_t seed = a.seed;
    Precision precision = a.precision;

    if (cli_precision_ready("bench", precision, 0)) return 2;
    char why[160], described[200];
    threads = compute_threads_setup(threads, why, sizeof why);
    double sgemm_peak = blas_sgemm_peak_gflops();
    double peak = precision == PRECISION_BF16 ? bf16_peak_gflops() : sgemm_peak;

    int B = batch, T = cfg.n_ctx;
    GPT *m = gpt_create(&cfg, B, 1);
    gpt_init_weights(m, seed, 0.02f, config_preset_scales_residual(a.model.preset));
    gpt_set_precision(m, precision);
    StepTimes st = gpt_time_steps(m, B, warmup, steps, seed, json ? NULL : print_step, NULL);
    double t_fb = st.forward_s + st.head_s + st.backward_s, loss = st.loss;
    double step_s = t_fb + st.optim_s;
    double tok_s = (double)B * T / step_s;
    double gflops = tok_s * gpt_train_flops_per_token(&cfg) / 1e9;
    const char *core = blas_core_name(), *origin = blas_core_origin();
    if (json) {
        json_t *result = json_pack("{s:s,s:i,s:i,s:i,s:i,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:s,s:s,s:o}",
                                 "model", a.model.preset, "batch", B, "n_ctx", T, "threads", threads, "steps", steps,
                                 "params", (json_int_t)m->n_params, "tokens_per_s", json_real_or_null(tok_s), "step_s",
                                 json_real_or_null(step_s), "fwdbwd_s", json_real_or_null(t_fb), "optim_s",
                                 json_real_or_null(st.optim_s), "model_gflops", json_real_or_null(gflops),
                                 "sgemm_peak_gflops", json_real_or_null(sgemm_peak), "mfu", json_real_or_null(gflops / peak),
                                 "peak_rss_mb", json_real_or_null(peak_rss_mb()), "openblas_core", core,
                                 "openblas_core_origin", origin, "loss", json_real_or_null(loss));
        json_object_set_new(result, "threads_reason", json_string(why));
        /* what OpenMP and OpenBLAS report they run, not what was asked of them */
        json_object_set_new(result, "omp_threads", json_integer(compute_threads()));
        json_object_set_new(result, "blas_threads", json_integer(blas_threads()));
        /* the parts and the shapes: what gpt plan --calibration reads (run/plan.h) */
        json_object_set_new(result, "forward_s", json_real_or_null(st.forward_s));
        json_object_set_new(result, "head_s", json_real_or_null(st.head_s));
        json_object_set_new(result, "backward_s", json_real_or_null(st.backward_s));
        json_object_set_new(result, "n_layer", json_integer(cfg.n_layer));
        json_object_set_new(result, "n_head", json_integer(cfg.n_head));
        json_object_set_new(result, "n_embd", json_integer(cfg.n_embd));
        json_object_set_new(result, "vocab_size", json_integer(cfg.vocab_size));
        json_object_set_new(result, "n_ffn", json_integer(cfg.n_ffn));
        json_object_set_new(result, "ln", json_string(config_ln_name(cfg.ln)));
        json_object_set_new(result, "cpu", json_string(cpu_model_name()));
        json_object_set_new(result, "kernels", json_string(kernels_name()));
        json_object_set_new(result, "precision", json_string(precision_name(precision)));
        if (precision == PRECISION_BF16) {
            json_object_set_new(result, "bf16_path", json_string(bf16_path_description()));
            json_object_set_new(result, "bf16_peak_gflops", json_real_or_null(peak));
        }
        cli_print_json(result);
    } else {
        printf("model %s: %zu parameters, batch %d x %d tokens, %s, kernels %s, OpenBLAS core %s (%s), "
               "%s\n", a.model.preset, m->n_params, B, T, compute_threads_describe(threads, why, described, sizeof described),
               kernels_name(), core, origin,
               precision_description(precision));
        printf("step %.3f s (forward+backward %.3f s: blocks forward %.3f, head %.3f, blocks backward %.3f; "
               "zeroing + AdamW %.3f s): %.1f tokens/s\n", step_s, t_fb, st.forward_s, st.head_s, st.backward_s,
               st.optim_s, tok_s);
        printf("model %.1f GFLOP/s of %s peak %.1f GFLOP/s: MFU %.1f%%; peak RSS %.0f MiB\n", gflops,
               precision == PRECISION_BF16 ? "bf16 product" : "sgemm", peak, 100.0 * gflops / peak, peak_rss_mb());
    }
    gpt_free(m);
    return 0;
}
