/* corpus.c: `gpt prepare`: raw text to the HDF5 corpus, on any number of ranks, in
 * bounded memory.
 *
 * The inputs are one stream of documents. Prepare runs in rounds: round k covers the
 * stream positions [base_k, base_k + P R_k), rank r tokenizes the documents that start
 * in its slot [base_k + r R_k, base_k + (r + 1) R_k), and the round ends with an
 * MPI_Exscan of the ranks' counts and one collective append to the extensible datasets.
 * Documents are never split and the slots of a round are in rank order, so the file
 * holds the documents in input order whatever P and R are. R_k is sized from the
 * memory bound and the densest round so far (tokens and documents per byte), the same
 * on every rank.
 *
 * A plain input is mapped (mmap), and a rank reaches its slot directly; the pages it
 * read are dropped after each round. A compressed one (zstream.h) cannot be entered
 * at an offset: every rank decompresses all of it, splits it into documents and
 * tokenizes only those that start in its slots. Positions in it are decompressed
 * bytes. /tokenizer and the root attributes are written at the end by rank 0 alone,
 * through the serial driver, and the file is published (base/atomic.h) only when all of it
 * is complete. Every collective is a phase of the watchdog (--collective-timeout), whose
 * step is the round: a rank that stops answering ends the job with WATCHDOG_EXIT, and
 * the ranks that end it remove the .tmp first. */
#include "files/corpus.h"

#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic.h"
#include "base/stop.h"
#include "base/util.h"
#include "corpus_parts.h"
#include "dist/dist.h"
#include "dist/watchdog.h"
#include "files/h5util.h"
#include "files/tokenizer_file.h"

/* The least data a round may hold, whatever --max-memory leaves after the program itself. */
#define MIN_ROUND_BUDGET ((double)(1 << 20))
#define PROGRESS_EVERY_S 10.0

static int is_val(int64_t g, double f) { return floor((double)(g + 1) * f) > floor((double)g * f); }

/* ---- rounds ---- */

/* Bytes of text a rank takes a round so that what it holds stays within budget: the
 * mapped text, its tokens (int32 with a growing vector's slack, then their file type)
 * and three numbers a document, at `tokens` and `docs` a byte. */
static int64_t round_bytes(double budget, double tokens, double docs, size_t elem) {
    double per_byte = 1.0 + tokens * (2 * sizeof(int32_t) + (double)elem) + docs * (2 * 8 + 1 + 8);
    double r = budget / per_byte;
    return r < 4096 ? 4096 : (int64_t)r;
}

static void print_progress(double t0, int64_t read, int64_t total, int64_t tokens) {
    double s = now_seconds() - t0, rate = (double)read / s;
    char eta[32] = "";
    if (read > 0 && read < total) {
        long left = (long)((double)(total - read) / rate + 0.5);
        snprintf(eta, sizeof eta, ", ETA %ld:%02ld:%02ld", left / 3600, left / 60 % 60, left % 60);
    }
    printf("prepare: %.1f of %.1f MB read (%.0f%%), %.1f M tokens written, %.1f MB/s%s\n", (double)read / 1e6,
           (double)total / 1e6, 100.0 * (double)read / (double)total, (double)tokens / 1e6, rate / 1e6, eta);
    fflush(stdout);
}

int corpus_prepare(const char *tokenizer_path, const char *out, const char *const *inputs,
                   int n_inputs, const PrepareOptions *opt, PrepareStats *stats) {
    h5_quiet();
    stop_signals_catch();
    int rank = dist_rank(), P = dist_size();
    char tmp[PATH_MAX], outcome[2 * PATH_MAX + 160];
    if (atomic_tmp_path(out, tmp, sizeof tmp)) return -1;
    snprintf(outcome, sizeof outcome, "%s is as it was (a corpus is renamed into place only when whole) and the "
             "unfinished %s is removed: run gpt prepare again", out, tmp);
    WatchdogJob job = {.cmd = "prepare", .step = "round", .outcome = outcome, .remove = tmp,
                       .timeout_s = opt->collective_timeout};
    if (dist_agree(watchdog_start(&job))) {
        watchdog_stop(); /* where it started */
        return -1;
    }
    /* MPI and HDF5 before any data, the largest rank's: every rank must size rounds alike */
    double program_mb = current_rss_mb();
    watchdog_enter("the allreduce of the ranks' memory");
    MPI_Allreduce(MPI_IN_PLACE, &program_mb, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    watchdog_leave();
    Tokenizer *t = tokenizer_load(tokenizer_path);
    Stream s = {0};
    Work w = {.tok = t, .opt = opt};
    Output o = {0};
    char *split = NULL;
    int rc = !t || corpus_open_inputs(&s, inputs, n_inputs, opt->split_on_blank_lines);
    if (!rc && (w.eot = tokenizer_special_id(t, TOK_EOT)) < 0)
        rc = gpt_error("%s: the tokenizer has no %s token to end documents with", tokenizer_path, TOK_EOT);
    watchdog_enter("the agreement on the inputs and the tokenizer");
    rc = dist_agree(rc);
    watchdog_leave();
    if (rc) goto out;
    int wide = tokenizer_vocab_size(t) > 65536;
    size_t elem = wide ? 4 : 2;
    Counts none = {{0, 0}, {0, 0}};
    /* before and after the create, which truncates */
    watchdog_enter("creating the corpus file");
    if (corpus_reserve(out, tmp, &none, elem, t) || dist_agree(corpus_output_create(&o, tmp, wide)) ||
        corpus_reserve(out, tmp, &none, elem, t))
        rc = -1;
    watchdog_leave();
    if (rc) goto out;

    double budget = (double)opt->max_memory - program_mb * 1048576.0;
    if (budget < MIN_ROUND_BUDGET) budget = MIN_ROUND_BUDGET;
    /* tokens and documents a byte: at first the most there can be, then 25% above the densest round */
    double density[2] = {1.0, 1.0 / 16}, densest[2] = {0, 0};
    int64_t base = 0, docs_before = 0;
    double t0 = now_seconds(), printed = t0;
    int rounds = 0;
    for (int at_end = 0; !at_end; rounds++) {
        int64_t R = round_bytes(budget, density[0], density[1], elem);
        int64_t text_before = w.text_bytes;
        watchdog_step(rounds + 1);
        fault_point("prepare-round", rounds, rank);
        rc = stop_signal_caught() ? gpt_error("interrupted by %s", stop_signal_name())
                                  : corpus_tokenize_slot(&w, &s, base + rank * R, base + (rank + 1) * R, &at_end);
        watchdog_enter("the agreement on the round's tokenizing");
        rc = dist_agree(rc);
        watchdog_leave();
        if (rc) break;

        /* global document index -> split; this rank's place in the round */
        int64_t first_doc = 0, n_docs = (int64_t)w.n_docs;
        watchdog_enter("the prefix sum of the round's documents");
        MPI_Exscan(&n_docs, &first_doc, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        watchdog_leave();
        if (rank == 0) first_doc = 0;
        split = xrealloc(split, w.n_docs + 1);
        Counts mine = {{0, 0}, {0, 0}}, before = {{0, 0}, {0, 0}}, round;
        for (size_t k = 0; k < w.n_docs; k++) {
            split[k] = (char)is_val(docs_before + first_doc + (int64_t)k, opt->val_fraction);
            mine.tokens[(int)split[k]] += w.doc_len[k];
            mine.docs[(int)split[k]]++;
        }
        watchdog_enter("the sums of the round's tokens");
        MPI_Exscan(&mine, &before, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(&mine, &round, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        watchdog_leave();
        if (rank == 0) memset(&before, 0, sizeof before);
        docs_before += round.docs[0] + round.docs[1];

        double text = (double)(w.text_bytes - text_before);
        double seen[4] = {at_end, text > 0 ? (double)w.tokens.n / text : 0, text > 0 ? (double)w.n_docs / text : 0,
                          (double)corpus_file_bytes_read(&s, base + (rank + 1) * R)};
        watchdog_enter("the allreduce of the round's progress");
        MPI_Allreduce(MPI_IN_PLACE, seen, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        watchdog_leave();
        at_end = seen[0] > 0;
        for (int k = 0; k < 2; k++)
            if (seen[1 + k] > 0) densest[k] = fmax(densest[k], seen[1 + k]), density[k] = fmin(1.0, 1.25 * densest[k]);

        Counts after = o.done;
        for (int k = 0; k < 2; k++) after.tokens[k] += round.tokens[k], after.docs[k] += round.docs[k];
        watchdog_enter("writing the round's tokens");
        if (!(rc = corpus_reserve(out, tmp, &after, elem, t)) &&
            (rc = dist_agree(corpus_output_append(&o, &w, split, &mine, &before, &round))))
            gpt_error("%s: writing the tokens failed (disk full?)", tmp);
        watchdog_leave();
        if (rc) break;
        w.tokens.n = 0, w.n_docs = 0;
        base += P * R;
        if (rank == 0 && !at_end && now_seconds() - printed >= PROGRESS_EVERY_S) {
            print_progress(t0, (int64_t)seen[3], s.file_bytes, o.done.tokens[0] + o.done.tokens[1]);
            printed = now_seconds();
        }
    }
    /* document 0 always goes to train, so train is empty only when there are no documents */
    if (!rc && o.done.docs[0] == 0) rc = gpt_error("no documents: the inputs hold no text");
    watchdog_enter("finishing the corpus file");
    if (!rc && (rc = dist_agree(corpus_output_finish(&o)))) gpt_error("%s: writing the tokens failed (disk full?)", tmp);
    if (corpus_output_close(&o) && !rc) rc = gpt_error("%s: writing the tokens failed (disk full?)", tmp);
    rc = dist_agree(rc);
    watchdog_leave();
    if (rc) goto out;
    watchdog_enter("rank 0's write of the tokenizer and the attributes");
    if (rank == 0) { /* reserved again: closing the parallel file truncated it */
        rc = h5_reserve(out, tmp, corpus_file_bytes_needed(&o.done, elem, t), "the corpus") ? -1
             : corpus_write_metadata(tmp, t, &s, &o.done, opt) ? gpt_error("%s: writing the metadata failed", tmp)
                                                               : atomic_publish(tmp, out);
    }
    rc = dist_agree(rc);
    watchdog_leave();
    if (rc) goto out;
    memcpy(stats->tokens, o.done.tokens, sizeof o.done.tokens);
    memcpy(stats->docs, o.done.docs, sizeof o.done.docs);
    stats->text_bytes = s.offs[s.n]; /* known to the ranks that reached the end */
    stats->file_bytes = s.file_bytes;
    stats->rounds = rounds;
    stats->peak_rss_mb = peak_rss_mb();
    watchdog_enter("the allreduces of the summary");
    MPI_Allreduce(MPI_IN_PLACE, &stats->text_bytes, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &stats->peak_rss_mb, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    watchdog_leave();
out:
    /* every rank agreed on rc; the file is closed everywhere before it is removed */
    watchdog_enter("closing the corpus file");
    if (corpus_output_close(&o)) rc = rc ? rc : -1;
    watchdog_leave();
    if (rc && rank == 0) remove(tmp);
    watchdog_stop();
    free(split);
    free(w.tokens.ids);
    free(w.doc_len);
    corpus_close_inputs(&s);
    tokenizer_free(t);
    return rc;
}
