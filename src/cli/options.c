/* options.c: the command-line parser of every command (cliopt.h), the groups of options
 * several commands share, and the messages of the command line (cli.h). */
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/cli.h"
#include "cli/cliopt.h"
#include "cpu/blas.h"
#include "dist/dist.h"
#include "dist/watchdog.h"
#include "model/config.h"

static int quiet;

void cli_quiet(int q) { quiet = q; }

int cli_fail(const char *cmd) {
    if (!quiet) fprintf(stderr, "gpt %s: %s\n", cmd, gpt_last_error());
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    if (quiet) return 2;
    va_list ap;
    fprintf(stderr, "gpt %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see gpt %s --help)\n", cmd);
    return 2;
}

int cli_check_output(const char *cmd, const char *opt, const char *out, const char *const *inputs, int n) {
    for (int i = 0; out && i < n; i++)
        if (inputs[i] && same_file(out, inputs[i]))
            return cli_usage_error(cmd, "--%s %s is also an input (%s)", opt, out, inputs[i]);
    return 0;
}

/* ---- the parser ---- */

/* A row with the offset of the struct its offset is relative to (a group's). */
typedef struct {
    const CliOpt *o;
    size_t base;
} Row;

#define CLI_MAX_ROWS 96

static const CliOpt help_row = {.name = "help", .kind = CLI_FLAG, .help = "print this help and exit", .letter = 'h'};

static int flatten(const CliOpt *t, size_t base, Row *rows, int n) {
    for (; t->name || t->kind == CLI_GROUP; t++) {
        if (t->kind == CLI_GROUP) n = flatten(t->group, base + t->offset, rows, n);
        else rows[n++] = (Row){t, base};
    }
    return n;
}

/* What a value of the row must be: "an integer >= 0", "a number in [0, 1)", "fp32 or bf16". */
static const char *expected(const CliOpt *o, char *buf, size_t size) {
    size_t n = 0;
    if (o->choices) return names_or(o->choices, buf, size); /* CLI_CHOICE, or a CLI_STRING's listed values */
    switch (o->kind) {
    case CLI_DURATION:
        return "a duration like 90 (minutes), 1:30:00 or 1-12:00:00 (minutes and seconds below 60, hours below 24 "
               "after days), or UNLIMITED";
    case CLI_INT: case CLI_LONG: case CLI_U64: n = (size_t)snprintf(buf, size, "an integer"); break;
    default: n = (size_t)snprintf(buf, size, "a number"); break;
    }
    unsigned f = o->flags | (o->kind == CLI_U64 ? CLI_MIN : 0); /* >= 0 by its kind */
    double min = o->kind == CLI_U64 ? 0.0 : o->min;
    if ((f & CLI_MIN) && (f & CLI_MAX))
        snprintf(buf + n, size - n, " in %c%.15g, %.15g%c", f & CLI_MIN_OPEN ? '(' : '[', min, o->max,
                 f & CLI_MAX_OPEN ? ')' : ']');
    else if (f & CLI_MIN) snprintf(buf + n, size - n, " %s %.15g", f & CLI_MIN_OPEN ? ">" : ">=", min);
    else if (f & CLI_MAX) snprintf(buf + n, size - n, " %s %.15g", f & CLI_MAX_OPEN ? "<" : "<=", o->max);
    return buf;
}

static int in_range(const CliOpt *o, double v) {
    if (o->flags & CLI_MIN && !(o->flags & CLI_MIN_OPEN ? v > o->min : v >= o->min)) return 0;
    if (o->flags & CLI_MAX && !(o->flags & CLI_MAX_OPEN ? v < o->max : v <= o->max)) return 0;
    return 1;
}

/* Checks arg against the row and stores it; 2 after the message. */
static int take(const char *cmd, const Row *r, const char *arg, char *opts) {
    const CliOpt *o = r->o;
    char *p = opts + r->base + o->offset, what[256];
    union { int i; long l; unsigned long long u; float f; double d; } x = {0};
    double v = 1.0;
    int bad = 0;
    switch (o->kind) {
    case CLI_INT: bad = parse_int(arg, &x.i), v = x.i; break;
    case CLI_LONG: bad = parse_long(arg, &x.l), v = (double)x.l; break;
    case CLI_U64: bad = parse_u64(arg, &x.u), v = (double)x.u; break;
    case CLI_FLOAT: bad = parse_float(arg, &x.f), v = x.f; break;
    case CLI_DOUBLE: bad = parse_double(arg, &x.d), v = x.d; break;
    case CLI_DURATION: bad = parse_duration(arg, &x.d), v = x.d; break;
    case CLI_CHOICE:
        for (v = -1.0, x.i = 0; o->choices[x.i]; x.i++)
            if (!strcmp(o->choices[x.i], arg)) v = x.i;
        bad = v < 0.0;
        break;
    default: break;
    }
    if (bad || !in_range(o, v))
        return cli_usage_error(cmd, "--%s: expected %s, got '%s'", o->name, expected(o, what, sizeof what), arg);
    if (o->store) {
        if (o->store(p, o, arg, v)) return cli_usage_error(cmd, "%s", gpt_last_error());
    } else
        switch (o->kind) {
        case CLI_FLAG: *(int *)p = 1; break;
        case CLI_INT: *(int *)p = x.i; break;
        case CLI_LONG: *(long *)p = x.l; break;
        case CLI_U64: *(uint64_t *)p = x.u; break;
        case CLI_FLOAT: *(float *)p = x.f; break;
        case CLI_DOUBLE: case CLI_DURATION: *(double *)p = x.d; break;
        case CLI_STRING: *(const char **)p = arg; break;
        case CLI_CHOICE: *(int *)p = (int)v; break;
        case CLI_LIST: {
            int *n = (int *)(opts + r->base + o->count);
            if (*n == (int)o->max)
                return cli_usage_error(cmd, "--%s: at most %d values, got '%s'", o->name, (int)o->max, arg);
            ((const char **)p)[(*n)++] = arg;
            break;
        }
        case CLI_GROUP: break;
        }
    if (o->flags & CLI_GIVEN) *(int *)(opts + r->base + o->count) = 1;
    return 0;
}

static void print_default(const CliOpt *o, const char *p) {
    if (o->dflt) {
        printf(" (default %s)", o->dflt);
        return;
    }
    if (o->store || o->flags & CLI_REQUIRED) return;
    switch (o->kind) {
    case CLI_INT: printf(" (default %d)", *(const int *)p); break;
    case CLI_LONG: printf(" (default %ld)", *(const long *)p); break;
    case CLI_U64: printf(" (default %llu)", (unsigned long long)*(const uint64_t *)p); break;
    case CLI_FLOAT: printf(" (default %g)", (double)*(const float *)p); break;
    case CLI_DOUBLE: printf(" (default %g)", *(const double *)p); break;
    case CLI_CHOICE: printf(" (default %s)", o->choices[*(const int *)p]); break;
    case CLI_STRING: if (*(const char *const *)p) printf(" (default %s)", *(const char *const *)p); break;
    default: break;
    }
}

static void print_rows(const CliOpt *t, const char *defaults) {
    for (; t->name; t++) {
        char left[128];
        int n = t->letter ? snprintf(left, sizeof left, "  -%c, --%s", t->letter, t->name)
                          : snprintf(left, sizeof left, "  --%s", t->name);
        if (t->metavar) n += snprintf(left + n, sizeof left - (size_t)n, " %s", t->metavar);
        printf(n < 30 ? "%-30s" : "%s\n%30s", left, "");
        fputs(t->help, stdout);
        if (t->kind == CLI_STRING && t->choices) { /* the values a command checks itself, listed */
            char what[512];
            printf(": %s", expected(t, what, sizeof what));
        }
        print_default(t, defaults + t->offset);
        putchar('\n');
    }
}

/* Into own: the rows of t and of its untitled groups, their offsets from the struct of t. */
static int untitled_rows(const CliOpt *t, size_t base, CliOpt *own, int n) {
    for (; t->name || t->kind == CLI_GROUP; t++)
        if (t->kind != CLI_GROUP) own[n] = *t, own[n++].offset += base;
        else if (!t->help) n = untitled_rows(t->group, base + t->offset, own, n);
    return n;
}

/* The rows of a table and of its untitled groups, then each titled group under its title. */
static void print_table(const CliOpt *t, const char *defaults, const char *title) {
    CliOpt own[CLI_MAX_ROWS];
    int n = untitled_rows(t, 0, own, 0);
    if (!title) own[n++] = help_row;
    own[n++] = (CliOpt)CLI_END;
    if (title) printf("\n%s:\n", title);
    print_rows(own, defaults);
    for (const CliOpt *r = t; r->name || r->kind == CLI_GROUP; r++)
        if (r->kind == CLI_GROUP && r->help) print_table(r->group, defaults + r->offset, r->help);
}

static void print_help(const CliCommand *c, const char *defaults) {
    printf("usage: %sgpt %s", c->mpi ? "[mpirun -np P] " : "", c->name);
    Row rows[CLI_MAX_ROWS];
    int n = flatten(c->opts, 0, rows, 0);
    for (int i = 0; i < n; i++)
        if (rows[i].o->flags & CLI_REQUIRED) printf(" --%s %s", rows[i].o->name, rows[i].o->metavar);
    printf(" [OPTIONS]%s%s\n\n%s\noptions:\n", c->args ? " " : "", c->args ? c->args : "", c->about);
    print_table(c->opts, defaults, NULL);
}

/* word is "--name" or "--name=value" */
static int whole_word(const char *word, const char *name) {
    size_t n = strcspn(word + 2, "=");
    return n == strlen(name) && !strncmp(word + 2, name, n);
}

int cli_parse(const CliCommand *c, int argc, char **argv, void *opts, int *first) {
    if (c->mpi) cli_quiet(dist_launch_rank() != 0);
    Row rows[CLI_MAX_ROWS];
    int n = flatten(c->opts, 0, rows, 0);
    rows[n++] = (Row){&help_row, 0};
    struct option longopts[CLI_MAX_ROWS + 1];
    char shortopts[2 * CLI_MAX_ROWS + 2] = ":", seen[CLI_MAX_ROWS] = {0};
    size_t ns = 1;
    for (int i = 0; i < n; i++) {
        const CliOpt *o = rows[i].o;
        int arg = o->kind == CLI_FLAG ? no_argument : required_argument;
        longopts[i] = (struct option){o->name, arg, NULL, 256 + i};
        if (o->letter) {
            shortopts[ns++] = o->letter;
            if (arg == required_argument) shortopts[ns++] = ':';
        }
    }
    longopts[n] = (struct option){0, 0, 0, 0};
    shortopts[ns] = '\0';
    char *defaults = xmalloc(c->size);
    memcpy(defaults, opts, c->size);
    int opt, rc = -1, longindex = -1;
    optind = 0;
    opterr = 0;
    while (rc < 0 && (opt = getopt_long(argc, argv, shortopts, longopts, &longindex)) != -1) {
        /* the option's own word: before its value when that is a word of its own */
        const char *word = argv[optind - (optarg && optarg == argv[optind - 1] ? 2 : 1)];
        if (opt == '?' && optopt) rc = cli_usage_error(c->name, "unknown option '-%c'", optopt);
        else if (opt == '?') rc = cli_usage_error(c->name, "unknown option '%.*s'", (int)strcspn(word, "="), word);
        else if (opt == ':') rc = cli_usage_error(c->name, "option '%s' needs a value", argv[optind - 1]);
        /* getopt_long takes abbreviations; the table's names are whole words, so that a new
         * option never makes an abbreviation ambiguous or changes its meaning */
        else if (longindex >= 0 && !whole_word(word, longopts[longindex].name))
            rc = cli_usage_error(c->name, "unknown option '%.*s'", (int)strcspn(word, "="), word);
        else {
            int i = opt - 256;
            if (opt < 256) /* a short option */
                for (i = 0; rows[i].o->letter != opt; i++) {}
            if (rows[i].o == &help_row) {
                if (!quiet) print_help(c, defaults);
                rc = 0;
            } else if (!(rc = take(c->name, &rows[i], optarg, opts))) {
                seen[i] = 1;
                rc = -1;
            }
        }
        longindex = -1;
    }
    free(defaults);
    for (int i = 0; rc < 0 && i < n; i++)
        if (rows[i].o->flags & CLI_REQUIRED && !seen[i])
            rc = cli_usage_error(c->name, "--%s %s is required", rows[i].o->name, rows[i].o->metavar);
    int args = argc - optind;
    if (rc < 0 && c->max_args >= 0 && args > c->max_args)
        rc = cli_usage_error(c->name, "unexpected argument '%s'", argv[optind + c->max_args]);
    if (rc < 0 && args < c->min_args) rc = cli_usage_error(c->name, "missing %s", c->args);
    *first = optind;
    if (rc < 0 && c->mpi) dist_init(NULL, NULL);
    return rc;
}

/* ---- the shared groups ---- */

static int config_store(void *dst, const CliOpt *o, const char *arg, double v) {
    (void)arg;
    return config_args_add(dst, o->id, v);
}


#define DIM(flag, field, what) \
    {.name = flag, .kind = CLI_INT, .flags = CLI_MIN | CLI_MAX, .min = 1, .max = CONFIG_MAX_DIM, .metavar = "N", \
     .help = what, .store = config_store, .id = field}
#define PROB(flag, field, what) \
    {.name = flag, .kind = CLI_FLOAT, .flags = CLI_MIN | CLI_MAX | CLI_MAX_OPEN, .min = 0, .max = 1, .metavar = "P", \
     .help = what, .store = config_store, .id = field}

const CliOpt cli_config_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(ConfigArgs, preset), .metavar = "PRESET",
     .help = "the preset the options below change", .choices = config_preset_names},
    DIM("n-layer", CONFIG_OPT_N_LAYER, "transformer blocks"),
    DIM("n-head", CONFIG_OPT_N_HEAD, "attention heads (divide --n-embd)"),
    DIM("n-embd", CONFIG_OPT_N_EMBD, "width of the residual stream"),
    DIM("n-ctx", CONFIG_OPT_N_CTX, "context window"),
    DIM("vocab", CONFIG_OPT_VOCAB, "vocabulary size"),
    {.name = "n-ffn", .kind = CLI_INT, .flags = CLI_MIN | CLI_MAX, .min = 1, .max = CONFIG_MAX_DIM, .metavar = "N",
     .help = "feed-forward width", .dflt = "4 n_embd", .store = config_store, .id = CONFIG_OPT_N_FFN},
    {.name = "ln", .kind = CLI_CHOICE, .choices = config_ln_names, .metavar = "post|pre",
     .help = "LayerNorm placement (post: GPT-1's)", .store = config_store, .id = CONFIG_OPT_LN},
    {.name = "ln-eps", .kind = CLI_FLOAT, .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "E", .help = "LayerNorm epsilon",
     .store = config_store, .id = CONFIG_OPT_LN_EPS},
    PROB("dropout", CONFIG_OPT_DROPOUT, "embedding, residual and attention dropout at once"),
    PROB("dropout-embd", CONFIG_OPT_DROPOUT_EMBD, "dropout on the token and position embeddings"),
    PROB("dropout-resid", CONFIG_OPT_DROPOUT_RESID, "dropout on each sublayer's output"),
    PROB("dropout-attn", CONFIG_OPT_DROPOUT_ATTN, "dropout on the attention probabilities"),
    CLI_END};


const CliOpt cli_precision_opts[] = {
    {.name = "precision", .kind = CLI_CHOICE, .choices = precision_names, .metavar = "fp32|bf16",
     .help = "of the matrix products (bf16: bf16 operands, fp32 sums; docs/precision.md)"},
    CLI_END};

const CliOpt cli_collective_opts[] = {
    {.name = "collective-timeout", .kind = CLI_DOUBLE, .flags = CLI_MIN, .metavar = "S",
     .help = "seconds a collective may take before the job ends (0: no limit)"},
    CLI_END};

#define RUN_INT(flag, field, lo, what) \
    {.name = flag, .kind = CLI_INT, .offset = offsetof(RunOptions, field), .flags = CLI_MIN, .min = lo, \
     .metavar = "N", .help = what}
#define RUN_FLAG(flag, field, what) {.name = flag, .kind = CLI_FLAG, .offset = offsetof(RunOptions, field), .help = what}

const CliOpt cli_run_opts[] = {
    RUN_INT("eval-every", eval_every, 0, "steps between validations (0: only at the end)"),
    RUN_INT("log-every", log_every, 1, "steps between progress lines"),
    RUN_INT("max-bad-steps", max_bad_steps, 1, "non-finite steps in a row before the run stops"),
    CLI_THREADS_ROW(offsetof(RunOptions, threads)),
    RUN_FLAG("overwrite", overwrite, "start afresh in a run directory holding another run, removing it"),
    {.name = "ckpt-every", .kind = CLI_LONG, .offset = offsetof(RunOptions, ckpt_every), .flags = CLI_MIN,
     .metavar = "N", .help = "steps between checkpoints (0: none)"},
    {.name = "ckpt-minutes", .kind = CLI_DOUBLE, .offset = offsetof(RunOptions, ckpt_minutes), .flags = CLI_MIN,
     .metavar = "M", .help = "minutes between checkpoints (0: none)"},
    RUN_INT("keep", keep, 0, "newest checkpoints kept (0: all)"),
    {.name = "resume", .kind = CLI_STRING, .offset = offsetof(RunOptions, resume), .metavar = "auto|CKPT.h5",
     .help = "continue from the run directory's newest checkpoint, or from this one"},
    RUN_FLAG("allow-data-change", allow_data_change, "resume on other data (another blend or weights)"),
    {.name = "time-limit", .kind = CLI_DURATION, .offset = offsetof(RunOptions, time_limit), .metavar = "D",
     .help = "checkpoint and exit with 75 before this time has passed (Slurm's forms)", .dflt = "UNLIMITED"},
    {.kind = CLI_GROUP, .group = cli_collective_opts, .offset = offsetof(RunOptions, collective_timeout)},
    RUN_FLAG("shard-optimizer", shard_optimizer, "split AdamW's moments among the ranks (ZeRO-1)"),
    RUN_FLAG("async-ckpt", async_ckpt, "write checkpoints in the background"),
    {.name = "grad-reduce", .kind = CLI_CHOICE, .offset = offsetof(RunOptions, grad_reduce),
     .choices = grad_reduce_names, .metavar = "fp32|bf16",
     .help = "the gradients' format on the wire (bf16: half the bytes, fp32 sums; docs/training.md)"},
    {.kind = CLI_GROUP, .group = cli_precision_opts, .offset = offsetof(RunOptions, precision)},
    CLI_END};

void run_options_defaults(RunOptions *r) {
    *r = (RunOptions){.eval_every = 100, .log_every = 10, .max_bad_steps = 5, .keep = 3,
                      .t_start = now_seconds(), .collective_timeout = WATCHDOG_DEFAULT_S};
}

const char *run_options_conflict(const RunOptions *r) {
    if (r->resume && !*r->resume) return "--resume: expected auto or a checkpoint file, got ''";
    return r->overwrite && r->resume ? "--overwrite and --resume contradict each other: --overwrite starts afresh, "
                                       "removing the run directory's old run"
                                     : NULL;
}

int cli_precision_ready(const char *cmd, Precision p, int announce) {
    if (p != PRECISION_BF16) return 0;
    if (bf16_path_select()) {
        if (!quiet) fprintf(stderr, "gpt %s: %s\n", cmd, gpt_last_error());
        return 2;
    }
    if (announce && !quiet) fprintf(stderr, "gpt %s: %s\n", cmd, precision_description(p));
    return 0;
}
