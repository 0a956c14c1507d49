/* cliopt.h: the command line of every gpt command, from one declarative table.
 *
 * A command describes its options once, as rows of CliOpt: name, kind, range, where the
 * value goes (an offset into the command's options struct), metavariable and a line of
 * help. The default is whatever the struct holds when cli_parse is called, so it is
 * written once, in the command's initialiser. From the table cli_parse builds the
 * getopt_long table, checks every value against its kind and range with one wording
 * ("--seed: expected an integer >= 0, got '-5'"), and prints --help (synopsis, each
 * option with its metavariable, default and description). Shared groups (the model
 * configuration, RunOptions, --precision) are tables of their own, included by a
 * CLI_GROUP row at the offset of their struct. The command's code checks only what a
 * row cannot say: options that need or exclude each other. */
#ifndef GPT_CLIOPT_H
#define GPT_CLIOPT_H

#include <stddef.h>

typedef enum {
    CLI_FLAG,     /* int, set to 1; takes no value */
    CLI_INT,      /* int */
    CLI_LONG,     /* long */
    CLI_U64,      /* uint64_t, >= 0 */
    CLI_FLOAT,    /* float */
    CLI_DOUBLE,   /* double */
    CLI_STRING,   /* const char *: the argument itself (argv outlives the options) */
    CLI_LIST,     /* const char *[max]: each occurrence appended; the int at .count counts them */
    CLI_CHOICE,   /* int (or an enum in the order of .choices): the index of the value in .choices */
    CLI_DURATION, /* double seconds from Slurm's forms (parse_duration, util.h) */
    CLI_GROUP,    /* the rows of .group, their offsets relative to .offset; .help titles them */
} CliKind;

enum {
    CLI_MIN = 1, CLI_MAX = 2,            /* .min / .max bound the value, inclusive ... */
    CLI_MIN_OPEN = 4, CLI_MAX_OPEN = 8,  /* ... or exclusive */
    CLI_REQUIRED = 16,                   /* must be given (shown in the synopsis) */
    CLI_GIVEN = 32,                      /* the int at .count is set to 1 when the option is given */
};

typedef struct CliOpt CliOpt;
/* A value's destination where a plain store will not do: called with the checked value
 * (v: a number's value, or a CLI_CHOICE's index; arg: the text); nonzero with gpt_error()
 * is a usage error. */
typedef int (*CliStore)(void *dst, const CliOpt *o, const char *arg, double v);

struct CliOpt {
    const char *name;              /* long name, without "--" */
    CliKind kind;
    size_t offset;                 /* of the value in the options struct (or the group's struct) */
    unsigned flags;
    double min, max;               /* with CLI_MIN / CLI_MAX; a CLI_LIST's max is its capacity */
    const char *metavar;           /* the value's name in help; NULL for CLI_FLAG and CLI_GROUP */
    const char *help;              /* one line; for CLI_GROUP, the heading of its rows (NULL: none) */
    const char *dflt;              /* the default in words where the stored value does not say it */
    const char *const *choices;    /* CLI_CHOICE: NULL-terminated; CLI_STRING: listed by --help only */
    const CliOpt *group;           /* CLI_GROUP: the included table */
    size_t count;                  /* CLI_LIST's count, CLI_GIVEN's flag: offset of an int */
    CliStore store;                /* NULL: stored at .offset by kind */
    int id;                        /* for .store: which field */
    char letter;                   /* short option, or 0 */
};
/* Tables end with a row whose name is NULL. */
#define CLI_END {0}

typedef struct {
    const char *name;  /* "train", "tokenizer train" */
    const char *args;  /* positional arguments in the synopsis ("FILE", "FILES..."); NULL: none */
    int min_args, max_args; /* how many positional arguments; max -1: any */
    int mpi;           /* runs under mpirun: the synopsis says so, and cli_parse starts MPI */
    const char *about; /* the paragraphs after the synopsis */
    const CliOpt *opts;
    size_t size;       /* of the options struct: --help shows its state before parsing */
} CliCommand;

/* Parses argv[1..argc) (argv[0] is the command) into opts, whose current contents are the
 * defaults. -1: parsed, go on, the positional arguments are argv[*first .. argc); else the
 * exit status: 0 after --help (on standard output), 2 after one line on standard error
 * naming the option (unknown, missing value, out of range, required). Under cli_quiet(1)
 * nothing is printed. A command with .mpi prints only on the launcher's rank 0, and
 * starts MPI (dist_init) once its line has parsed: --help and a bad line answer at once,
 * without MPI's start-up (half a second), which no rank needs for them. */
int cli_parse(const CliCommand *c, int argc, char **argv, void *opts, int *first);

/* The shared groups, included with {.kind = CLI_GROUP, .group = ..., .offset = offsetof(the
 * struct's field)}: the model configuration (a ConfigArgs, config.h), RunOptions (run.h,
 * gpt train and gpt finetune), --precision (a Precision, precision.h) and
 * --collective-timeout (a double of seconds, default WATCHDOG_DEFAULT_S: RunOptions and
 * gpt prepare). */
extern const CliOpt cli_config_opts[], cli_run_opts[], cli_precision_opts[], cli_collective_opts[];

/* The --threads row of every command that computes, its value an int at off: 0 (the
 * command's initial value) means not given, and compute_threads_setup (cpu/threads.h)
 * resolves it, so every command defaults alike. */
#define CLI_THREADS_DEFAULT "OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, else this process's cores / the ranks on its node"
#define CLI_THREADS_ROW(off)                                                                                    \
    {.name = "threads", .kind = CLI_INT, .offset = (off), .flags = CLI_MIN, .min = 1, .metavar = "T",            \
     .help = "compute threads a rank", .dflt = CLI_THREADS_DEFAULT}

#endif
