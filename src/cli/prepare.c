/* prepare.c: `gpt prepare`, raw text to an HDF5 corpus (see corpus.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/cli.h"
#include "dist/dist.h"
#include "dist/watchdog.h"
#include "files/corpus.h"

typedef struct {
    const char *tok, *out, *list;
    double val_fraction, collective_timeout;
    int split_on_blank_lines, max_doc_mb, max_memory_mb;
} PrepareArgs;

#define P(field) offsetof(PrepareArgs, field)

static const CliOpt prepare_opts[] = {
    {.name = "tokenizer", .kind = CLI_STRING, .offset = P(tok), .flags = CLI_REQUIRED, .metavar = "TOK.h5",
     .help = "a tokenizer file (gpt tokenizer train|import) or a corpus"},
    {.name = "out", .kind = CLI_STRING, .offset = P(out), .flags = CLI_REQUIRED, .metavar = "CORPUS.h5",
     .help = "the corpus written"},
    /* a double, as the default: 0.01 in float is 0.0099999998, which puts 799 of 80000
     * documents in /val where the default puts 800 */
    {.name = "val-fraction", .kind = CLI_DOUBLE, .offset = P(val_fraction), .flags = CLI_MIN | CLI_MAX | CLI_MAX_OPEN,
     .max = 1, .metavar = "F", .help = "share of the documents, spread evenly, that go to /val"},
    {.name = "split-on-blank-lines", .kind = CLI_FLAG, .offset = P(split_on_blank_lines),
     .help = "a text file's paragraphs are documents (else a file is one)"},
    {.name = "max-doc-mb", .kind = CLI_INT, .offset = P(max_doc_mb), .flags = CLI_MIN, .min = 1, .metavar = "N", .help = "a larger document is an error"},
    {.name = "max-memory", .kind = CLI_INT, .offset = P(max_memory_mb), .flags = CLI_MIN, .min = 1, .metavar = "MB", .help = "what each rank holds: it tokenizes and writes in rounds that fit"},
    {.name = "input-list", .kind = CLI_STRING, .offset = P(list), .metavar = "FILE",
     .help = "further inputs, one path a line, after those on the command line"},
    {.kind = CLI_GROUP, .group = cli_collective_opts, .offset = P(collective_timeout)},
    CLI_END};

static const CliCommand prepare_cmd = {
    .name = "prepare", .mpi = 1, .args = "INPUTS...", .max_args = -1, .opts = prepare_opts, .size = sizeof(PrepareArgs),
    .about = "Tokenizes UTF-8 text into one HDF5 corpus (docs/formats.md). A text file is one\n"
             "document, or one per paragraph with --split-on-blank-lines; a .jsonl file holds one\n"
             "document per line in its \"text\" field. Every document ends with <|endoftext|>.\n"
             "Inputs may be gzip or zstd compressed (told by their content; name.jsonl.gz is JSON Lines).\n"
             "A document larger than a round of --max-memory is held whole. Under mpirun the ranks\n"
             "share the work; the file is the same for any number of ranks and any --max-memory.\n"
             "A collective that has not completed in --collective-timeout ends the job with exit\n"
             "code 69, leaving no file (docs/operations.md).\n"};

static int prepare(int argc, char **argv) {
    PrepareArgs a = {.val_fraction = 0.01, .max_doc_mb = 256, .max_memory_mb = 1024,
                     .collective_timeout = WATCHDOG_DEFAULT_S};
    int first, rc = cli_parse(&prepare_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *tok = a.tok, *out = a.out, *list = a.list;
    PrepareOptions opt = {.val_fraction = a.val_fraction, .split_on_blank_lines = a.split_on_blank_lines,
                          .max_doc_bytes = (size_t)a.max_doc_mb << 20, .max_memory = (size_t)a.max_memory_mb << 20,
                          .collective_timeout = a.collective_timeout};
    if (first == argc && !list) return cli_usage_error("prepare", "no input files");
    /* the inputs: command line, then the list file's lines */
    size_t list_len = 0;
    char *list_text = list ? (char *)read_file(list, &list_len) : NULL;
    if (dist_agree(list && !list_text)) return cli_fail("prepare");
    const char **inputs = xmalloc(((size_t)(argc - first) + list_len + 1) * sizeof *inputs);
    int n = 0;
    for (int i = first; i < argc; i++) inputs[n++] = argv[i];
    for (char *line = list_text ? strtok(list_text, "\n") : NULL; line; line = strtok(NULL, "\n"))
        if (line[strspn(line, " \t\r")]) inputs[n++] = line;
    rc = 0;
    if (n == 0) rc = cli_usage_error("prepare", "%s names no input files", list);
    const char *others[] = {tok, list};
    if (!rc && (cli_check_output("prepare", "out", out, inputs, n) || cli_check_output("prepare", "out", out, others, 2)))
        rc = 2;
    double t0 = now_seconds();
    PrepareStats st;
    if (!rc && corpus_prepare(tok, out, inputs, n, &opt, &st)) rc = cli_fail("prepare");
    if (!rc && dist_rank() == 0) {
        double s = now_seconds() - t0;
        printf("wrote %s: train %lld tokens in %lld documents, val %lld tokens in %lld documents; "
               "%.1f MB of text (%.1f MB of files) in %.2f s (%.1f MB/s) on %d rank(s), %d round(s), "
               "peak RSS %.0f MB a rank\n",
               out, (long long)st.tokens[0], (long long)st.docs[0], (long long)st.tokens[1], (long long)st.docs[1],
               st.text_bytes / 1e6, st.file_bytes / 1e6, s, st.text_bytes / 1e6 / s, dist_size(), st.rounds,
               st.peak_rss_mb);
    }
    free(inputs);
    free(list_text);
    return rc;
}

int cmd_prepare(int argc, char **argv) {
    int rc = prepare(argc, argv);
    dist_finalize();
    return rc;
}
