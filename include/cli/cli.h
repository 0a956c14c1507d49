/* cli.h: the subcommands of bin/gpt. Each takes the arguments after its name
 * (argv[0] is the subcommand) and returns the process exit status. */
#ifndef GPT_CLI_H
#define GPT_CLI_H

#include <getopt.h>
#include <jansson.h>

#include "run/run.h"

#include <stdint.h>

#include "files/data.h"
#include "model/model.h"
#include "text/tokenizer.h"

int cmd_init(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_prepare_task(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_eval_task(int argc, char **argv);
int cmd_merge_lora(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_eval_choice(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

/* A language model for inference in a precision and its tokenizer: the model file's own
 * /tokenizer unless tok_path is given; the tokenizer must fit the model's vocabulary and have
 * <|endoftext|>. -1 with gpt_error() otherwise (*m and *t, when set, are the caller's to
 * free). */
int cli_load_lm(const char *model, const char *tok_path, Precision precision, GPT **m, Tokenizer **t);

/* Under mpirun every rank runs the command; ranks other than 0 call cli_quiet(1) so that
 * each message is printed once. */
void cli_quiet(int quiet);
/* Prints "gpt CMD: <last error>" to stderr and returns 1. */
int cli_fail(const char *cmd);
/* Prints "gpt CMD: <message>" to stderr and returns 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* JSON output (--json): commands build their object with jansson, numbers through
 * json_real_or_null (util.h), and print it with cli_print_json: one line on standard
 * output; the object is freed. */
void cli_print_json(json_t *obj);

/* gpt eval's evaluation, shared with gpt prune so that both print the same numbers.
 * cli_parse_split: SPLIT_VAL or SPLIT_TRAIN for "val" or "train"; otherwise a usage
 * error of CMD and -1. */
int cli_parse_split(const char *cmd, const char *name);
/* Collective: opens the corpora DATA (a blend's specs, data.h) to evaluate m (read from
 * MODEL) on a split, checking that m covers their vocabulary and that each split holds a
 * window; n[c] gets corpus c's windows, at most `windows` when positive. NULL with the
 * same error on every rank. */
Blend *cli_eval_open(const GPT *m, const char *model, const char *const *data, int n_data, int split, long windows,
                     int64_t *n);
/* Collective: evaluates m on the first n[c] windows of each corpus; rank 0 prints gpt
 * eval's line a corpus, and the blend's weighted mean (or, with json, one JSON object)
 * naming MODEL, the corpora and the split. *loss: the mean NLL (a blend's weighted). */
int cli_eval_report(GPT *m, const char *model, const Blend *b, int split, const int64_t *n, int json, double *loss);

/* --precision fp32|bf16 (precision.h), taken by train, finetune, bench, eval, generate,
 * score and eval-choice: put CLI_PRECISION_OPTION in the option table. cli_precision
 * parses the value; cli_precision_ready, after parsing, chooses the bf16 path (an
 * impossible GPT_MATMUL is a usage error) and, for bf16, says on standard error which
 * path runs. Both return 0, or the exit status 2 after the message. */
enum { CLI_OPT_PRECISION = 0x3000 };
#define CLI_PRECISION_OPTION {"precision", required_argument, 0, CLI_OPT_PRECISION}
#define CLI_PRECISION_EXPECTED "--precision: expected fp32 or bf16"
int cli_precision(const char *cmd, const char *arg, Precision *p);
int cli_precision_ready(const char *cmd, Precision p, int announce);

/* The options of RunOptions (run.h) that gpt train and gpt finetune share: put
 * RUN_LONG_OPTIONS in the option table and hand every value to run_option() first. */
enum {
    RUN_OPT_BASE = 0x2000,
    RUN_OPT_EVAL_EVERY = RUN_OPT_BASE, RUN_OPT_LOG_EVERY, RUN_OPT_MAX_BAD, RUN_OPT_THREADS, RUN_OPT_OVERWRITE,
    RUN_OPT_CKPT_EVERY, RUN_OPT_CKPT_MINUTES, RUN_OPT_KEEP, RUN_OPT_RESUME, RUN_OPT_TIME_LIMIT, RUN_OPT_ALLOW_DATA_CHANGE,
    RUN_OPT_COLLECTIVE_TIMEOUT, RUN_OPT_SHARD_OPTIMIZER, RUN_OPT_ASYNC_CKPT, RUN_OPT_PRECISION
};
#define RUN_LONG_OPTIONS                                                                                  \
    {"eval-every", required_argument, 0, RUN_OPT_EVAL_EVERY},                                             \
    {"log-every", required_argument, 0, RUN_OPT_LOG_EVERY},                                               \
    {"max-bad-steps", required_argument, 0, RUN_OPT_MAX_BAD},                                             \
    {"threads", required_argument, 0, RUN_OPT_THREADS}, {"overwrite", no_argument, 0, RUN_OPT_OVERWRITE}, \
    {"ckpt-every", required_argument, 0, RUN_OPT_CKPT_EVERY},                                             \
    {"ckpt-minutes", required_argument, 0, RUN_OPT_CKPT_MINUTES},                                         \
    {"keep", required_argument, 0, RUN_OPT_KEEP}, {"resume", required_argument, 0, RUN_OPT_RESUME},       \
    {"time-limit", required_argument, 0, RUN_OPT_TIME_LIMIT},                                             \
    {"allow-data-change", no_argument, 0, RUN_OPT_ALLOW_DATA_CHANGE},                                     \
    {"collective-timeout", required_argument, 0, RUN_OPT_COLLECTIVE_TIMEOUT},                             \
    {"shard-optimizer", no_argument, 0, RUN_OPT_SHARD_OPTIMIZER},                                         \
    {"async-ckpt", no_argument, 0, RUN_OPT_ASYNC_CKPT}, {"precision", required_argument, 0, RUN_OPT_PRECISION}
void run_options_defaults(RunOptions *r);
/* 1 if opt is one of RUN_LONG_OPTIONS, stored into r or with *bad set to what was
 * expected; 0 if it is not one of them. */
int run_option(RunOptions *r, int opt, const char *arg, const char **bad);
/* After parsing: what in r contradicts itself, or NULL. */
const char *run_options_conflict(const RunOptions *r);

#endif
