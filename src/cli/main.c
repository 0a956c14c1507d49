/* main.c: bin/gpt, a git-style front end: `gpt COMMAND [OPTIONS]`. */
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "base/version.h"
#include "cli/cli.h"
#include "cpu/blas.h"
#include "cpu/threads.h"
#include "cpu/kernels.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    {"init", cmd_init, "write a freshly initialised model file"},
    {"bench", cmd_bench, "measure training speed and memory on synthetic tokens"},
    {"plan", cmd_plan, "plan a cluster run: layout, memory a rank, tokens/s, time"},
    {"tokenizer", cmd_tokenizer, "train a byte-level BPE tokenizer, or import GPT-2's"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"detokenize", cmd_detokenize, "turn token ids back into text"},
    {"prepare", cmd_prepare, "tokenize text into an HDF5 corpus (in parallel under mpirun)"},
    {"prepare-task", cmd_prepare_task, "turn labelled JSONL or CSV records into a task file for fine-tuning"},
    {"train", cmd_train, "pre-train a GPT on a corpus (data-parallel under mpirun)"},
    {"eval", cmd_eval, "mean loss and perplexity of a model on a corpus split"},
    {"finetune", cmd_finetune, "fine-tune a model on a task file: GPT-1's head and L3, or LoRA"},
    {"predict", cmd_predict, "a fine-tuned model's prediction for each record of a file"},
    {"eval-task", cmd_eval_task, "a fine-tuned model's accuracy or correlations, as JSON"},
    {"merge-lora", cmd_merge_lora, "merge LoRA adapters into their base: a full fine-tuned model"},
    {"generate", cmd_generate, "sample text from a model, one token at a time"},
    {"score", cmd_score, "log-likelihood, perplexity and bits per byte of a text"},
    {"eval-choice", cmd_eval_choice, "zero- and few-shot multiple-choice accuracy by log-likelihood"},
    {"prune", cmd_prune, "zero the smallest weights of a model (magnitude pruning)"},
    {"export", cmd_export, "write a model for Hugging Face transformers (safetensors) or llama.cpp (GGUF)"},
    {"import", cmd_import, "read a transformers gpt2 or openai-gpt model into a model file"},
    {"inspect", cmd_inspect, "describe and verify any file the tool writes (model, checkpoint, tokenizer, corpus, task, fine-tuned model)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: gpt COMMAND [OPTIONS]   (gpt COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

void cli_print_json(json_t *obj) {
    json_dumpf(obj, stdout, JSON_REAL_PRECISION(9)); /* float32 results: 9 digits tell them apart */
    putchar('\n');
    json_decref(obj);
}

int main(int argc, char **argv) {
    blas_select_core(argv);
    if (kernels_select_from_env()) {
        fprintf(stderr, "gpt: %s\n", gpt_last_error());
        return 2;
    }
    /* every command starts on the default threads (cpu/threads.h); those with --threads
     * resolve theirs again once their line is parsed */
    compute_threads_setup(0, NULL, 0);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("gpt %s\n", GPT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "gpt: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
