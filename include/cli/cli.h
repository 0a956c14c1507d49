/* cli.h: the subcommands of bin/gpt. Each takes the arguments after its name
 * (argv[0] is the subcommand) and returns the process exit status. */
#ifndef GPT_CLI_H
#define GPT_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "cli/cliopt.h"
#include "files/data.h"
#include "model/model.h"
#include "run/run.h"
#include "text/tokenizer.h"

int cmd_init(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
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
 * each message (and --help) is printed once. */
void cli_quiet(int quiet);
/* Prints "gpt CMD: <last error>" to stderr and returns 1. */
int cli_fail(const char *cmd);
/* Prints "gpt CMD: <message>" to stderr and returns 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Before any work: 0, or the usage error (2) "--OPT OUT is also an input (INPUT)" when OUT
 * names the same file as one of the n inputs (by device and inode, whatever the paths;
 * NULL inputs are skipped), which the output would destroy. */
int cli_check_output(const char *cmd, const char *opt, const char *out, const char *const *inputs, int n);

/* JSON output (--json): commands build their object with jansson, numbers through
 * json_real_or_null (util.h), and print it with cli_print_json: one line on standard
 * output; the object is freed. */
void cli_print_json(json_t *obj);

/* gpt eval's evaluation (eval.c), shared with gpt prune so that both print the same
 * numbers. split: SPLIT_VAL or SPLIT_TRAIN; cli_split_names names them in that order. */
extern const char *const cli_split_names[];
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

/* After parsing --precision (cli_precision_opts, cliopt.h): chooses the bf16 path (an
 * impossible GPT_MATMUL is a usage error) and, for bf16 with announce, says on standard
 * error which path runs. 0, or the exit status 2 after the message. */
int cli_precision_ready(const char *cmd, Precision p, int announce);

/* RunOptions (run.h), which gpt train and gpt finetune share through cli_run_opts: the
 * defaults, and after parsing, what in r contradicts itself (or NULL). */
void run_options_defaults(RunOptions *r);
const char *run_options_conflict(const RunOptions *r);

#endif
