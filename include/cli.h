/* cli.h: the subcommands of bin/gpt. Each takes the arguments after its name
 * (argv[0] is the subcommand) and returns the process exit status. */
#ifndef GPT_CLI_H
#define GPT_CLI_H

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

/* Under mpirun every rank runs the command; ranks other than 0 call cli_quiet(1) so that
 * each message is printed once. */
void cli_quiet(int quiet);
/* Prints "gpt CMD: <last error>" to stderr and returns 1. */
int cli_fail(const char *cmd);
/* Prints "gpt CMD: <message>" to stderr and returns 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
