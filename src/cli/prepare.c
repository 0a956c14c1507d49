/* prepare.c: `gpt prepare`, raw text to an HDF5 corpus (see corpus.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "files/corpus.h"
#include "dist/dist.h"
#include "base/util.h"

static const char help[] =
    "usage: [mpirun -np P] gpt prepare --tokenizer TOK.h5 --out CORPUS.h5 [--val-fraction F]\n"
    "                                  [--split-on-blank-lines] [--max-doc-mb N] [--max-memory MB]\n"
    "                                  [--input-list FILE] INPUTS...\n\n"
    "Tokenizes UTF-8 text into one HDF5 corpus (docs/formats.md). A text file is one\n"
    "document, or one per paragraph with --split-on-blank-lines; a .jsonl file holds one\n"
    "document per line in its \"text\" field. Every document ends with <|endoftext|>.\n"
    "Inputs may be gzip or zstd compressed (told by their content; name.jsonl.gz is JSON Lines).\n"
    "--max-memory MB (default 1024) bounds what each rank holds: it tokenizes and writes in\n"
    "rounds that fit (docs/formats.md); a document larger than a round is held whole.\n"
    "--val-fraction F (default 0.01) of the documents, spread evenly, go to /val.\n"
    "--input-list FILE names further inputs, one path a line, after those on the command line\n"
    "(for more files than a command line holds).\n"
    "Under mpirun the ranks share the work; the file is the same for any number of ranks\n"
    "and any --max-memory.\n"
    "TOK.h5: a tokenizer file (gpt tokenizer train|import) or a corpus.\n";

static int prepare(int argc, char **argv) {
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"out", required_argument, 0, 'o'},
                                         {"val-fraction", required_argument, 0, 'v'},
                                         {"split-on-blank-lines", no_argument, 0, 'b'},
                                         {"max-doc-mb", required_argument, 0, 'm'},
                                         {"input-list", required_argument, 0, 'l'},
                                         {"max-memory", required_argument, 0, 'M'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *tok = NULL, *out = NULL, *list = NULL;
    PrepareOptions opt = {.val_fraction = 0.01, .split_on_blank_lines = 0, .max_doc_bytes = (size_t)256 << 20,
                          .max_memory = (size_t)1024 << 20};
    int mb, o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't': tok = optarg; break;
        case 'o': out = optarg; break;
        case 'v':
            /* a double, as the default: 0.01 in float is 0.0099999998, which puts 799 of
             * 80000 documents in /val where the default puts 800 */
            if (parse_double(optarg, &opt.val_fraction) || opt.val_fraction < 0.0 || opt.val_fraction >= 1.0)
                return cli_usage_error("prepare", "--val-fraction: expected a number in [0, 1), got '%s'", optarg);
            break;
        case 'b': opt.split_on_blank_lines = 1; break;
        case 'm':
            if (parse_int(optarg, &mb) || mb < 1) return cli_usage_error("prepare", "--max-doc-mb: expected a positive integer, got '%s'", optarg);
            opt.max_doc_bytes = (size_t)mb << 20;
            break;
        case 'l': list = optarg; break;
        case 'M':
            if (parse_int(optarg, &mb) || mb < 1) return cli_usage_error("prepare", "--max-memory: expected a positive number of MB, got '%s'", optarg);
            opt.max_memory = (size_t)mb << 20;
            break;
        case 'h': if (dist_rank() == 0) fputs(help, stdout); return 0;
        default: return cli_usage_error("prepare", "unknown option");
        }
    }
    if (!tok || !out) return cli_usage_error("prepare", "--tokenizer and --out are required");
    if (optind == argc && !list) return cli_usage_error("prepare", "no input files");
    /* the inputs: command line, then the list file's lines */
    size_t list_len = 0;
    char *list_text = list ? (char *)read_file(list, &list_len) : NULL;
    if (dist_agree(list && !list_text)) return cli_fail("prepare");
    const char **inputs = xmalloc(((size_t)(argc - optind) + list_len + 1) * sizeof *inputs);
    int n = 0;
    for (int i = optind; i < argc; i++) inputs[n++] = argv[i];
    for (char *line = list_text ? strtok(list_text, "\n") : NULL; line; line = strtok(NULL, "\n"))
        if (line[strspn(line, " \t\r")]) inputs[n++] = line;
    int rc = 0;
    if (n == 0) rc = cli_usage_error("prepare", "%s names no input files", list);
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
    dist_init(&argc, &argv);
    cli_quiet(dist_rank() != 0);
    int rc = prepare(argc, argv);
    dist_finalize();
    return rc;
}
