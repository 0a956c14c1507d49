/* data.c: corpus reading and the sampler (see data.h). */
#include "files/data.h"

#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "dist/dist.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/tokenizer_file.h"

/* HDF5 checks a chunk's checksum whenever it reads it; keeping recently read chunks
 * (64 Ki tokens each) avoids doing that twice for neighbouring windows. */
#define CHUNK_CACHE_BYTES ((size_t)32 << 20)

struct Corpus {
    char path[1024];
    hid_t file, tokens[2];
    int64_t n[2];
    int vocab;
};

Corpus *corpus_open(const char *path) {
    h5_quiet();
    Corpus *c = xcalloc(1, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    c->file = c->tokens[0] = c->tokens[1] = -1;
    /* every rank checks the same file, so every rank reaches the same verdict */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    c->file = h5_open_read_fapl(path, fapl);
    H5Pclose(fapl);
    if (c->file < 0 || h5_expect_format(path, c->file, CORPUS_FORMAT, "a corpus (made by gpt prepare)")) goto fail;
    if (h5_read_attr_int(path, "", c->file, "vocab_size", &c->vocab)) goto fail;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 521, CHUNK_CACHE_BYTES, 1.0);
    static const char *const names[2] = {"train/tokens", "val/tokens"};
    for (int s = 0; s < 2; s++) {
        hsize_t dims;
        c->tokens[s] = H5Lexists(c->file, s ? "val" : "train", H5P_DEFAULT) > 0
                           ? H5Dopen2(c->file, names[s], dapl)
                           : -1;
        hid_t space = c->tokens[s] >= 0 ? H5Dget_space(c->tokens[s]) : -1;
        if (space < 0 || H5Sget_simple_extent_ndims(space) != 1) {
            if (space >= 0) H5Sclose(space);
            H5Pclose(dapl);
            gpt_error("%s: dataset /%s is missing or not 1-D", path, names[s]);
            goto fail;
        }
        H5Sget_simple_extent_dims(space, &dims, NULL);
        H5Sclose(space);
        c->n[s] = (int64_t)dims;
    }
    H5Pclose(dapl);
    return c;
fail:
    corpus_close(c);
    return NULL;
}

void corpus_close(Corpus *c) {
    if (!c) return;
    for (int s = 0; s < 2; s++)
        if (c->tokens[s] >= 0) H5Dclose(c->tokens[s]);
    if (c->file >= 0) H5Fclose(c->file);
    free(c);
}

int corpus_vocab_size(const Corpus *c) { return c->vocab; }
int64_t corpus_split_tokens(const Corpus *c, int split) { return c->n[split]; }

int corpus_read(Corpus *c, int split, int64_t start, int64_t n, int32_t *out) {
    hsize_t off = (hsize_t)start, cnt = (hsize_t)n;
    h5_lock(); /* a background checkpoint may be writing */
    hid_t fs = H5Dget_space(c->tokens[split]), ms = H5Screate_simple(1, &cnt, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &cnt, NULL);
    herr_t rc = H5Dread(c->tokens[split], H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, out);
    H5Sclose(ms);
    H5Sclose(fs);
    h5_unlock();
    if (rc < 0)
        return gpt_error("%s: cannot read tokens %lld..%lld of /%s (checksum mismatch: the file is corrupted)",
                         c->path, (long long)start, (long long)(start + n), split ? "val" : "train");
    for (int64_t i = 0; i < n; i++)
        if (out[i] < 0 || out[i] >= c->vocab)
            return gpt_error("%s: token %lld of /%s is %d, outside the vocabulary of %d", c->path,
                             (long long)(start + i), split ? "val" : "train", out[i], c->vocab);
    return 0;
}

int corpus_fingerprint(Corpus *c, uint64_t *out) {
    enum { SAMPLE = 4096 };
    int32_t *buf = xmalloc(sizeof(int32_t) * SAMPLE);
    uint64_t h = rng_key((uint64_t)c->vocab, (uint64_t)c->n[0]);
    h = rng_key(h, (uint64_t)c->n[1]);
    int rc = 0;
    for (int s = 0; s < 2 && !rc; s++) {
        int64_t n = c->n[s] < SAMPLE ? c->n[s] : SAMPLE;
        for (int end = 0; end < 2 && !rc && n > 0; end++) {
            rc = corpus_read(c, s, end ? c->n[s] - n : 0, n, buf);
            for (int64_t i = 0; !rc && i < n; i++) h = rng_key(h, (uint64_t)buf[i]);
        }
    }
    free(buf);
    *out = h;
    return rc;
}

int64_t windows_in(int64_t n_tokens, int n_ctx) { return n_tokens > 0 ? (n_tokens - 1) / n_ctx : 0; }

/* A bijection of [0, 2^bits) for even bits: four Feistel rounds keyed by `key`. */
static uint64_t feistel(uint64_t x, int bits, uint64_t key) {
    int half = bits / 2;
    uint64_t mask = (1ULL << half) - 1, l = x >> half, r = x & mask;
    for (uint64_t round = 0; round < 4; round++) {
        uint64_t f = rng_mix64(rng_key(key, round) ^ r) & mask;
        uint64_t t = r;
        r = l ^ f;
        l = t;
    }
    return l << half | r;
}

int64_t sampler_window(uint64_t seed, int64_t n_windows, int64_t i) {
    int64_t epoch = i / n_windows;
    uint64_t x = (uint64_t)(i % n_windows), key = rng_key(seed, (uint64_t)epoch);
    int bits = 2;
    while ((1ULL << bits) < (uint64_t)n_windows) bits += 2;
    /* cycle walking: apply until the value falls inside [0, n_windows) */
    do x = feistel(x, bits, key);
    while (x >= (uint64_t)n_windows);
    return (int64_t)x;
}

uint64_t sampler_dropout_key(uint64_t seed, int64_t i) {
    return rng_key(seed ^ 0xD40D0D40D0D40D0DULL, (uint64_t)i);
}

/* ---- blends ---- */

void blend_pick(const uint64_t *quota, int n, int64_t i, int *corpus, int64_t *j) {
    uint64_t rest = BLEND_QUOTA, x = (uint64_t)i;
    for (int c = 0; c < n - 1; rest -= quota[c++]) {
        uint64_t before = (uint64_t)((unsigned __int128)x * quota[c] / rest);
        uint64_t through = (uint64_t)((unsigned __int128)(x + 1) * quota[c] / rest);
        if (through > before) {
            *corpus = c, *j = (int64_t)before;
            return;
        }
        x -= before;
    }
    *corpus = n - 1, *j = (int64_t)x;
}

/* "W:PATH" when the part before the first ':' is a number (1, with *weight), else all of
 * spec is the path (0, weight 1). */
static int split_spec(const char *spec, double *weight, const char **path) {
    const char *colon = strchr(spec, ':');
    char num[64];
    *weight = 1.0, *path = spec;
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof num) return 0;
    memcpy(num, spec, (size_t)(colon - spec));
    num[colon - spec] = '\0';
    if (parse_double(num, weight)) return *weight = 1.0, 0; /* a path with a colon in it */
    *path = colon + 1;
    return 1;
}

const char *blend_spec_path(const char *spec) {
    double w;
    const char *path;
    split_spec(spec, &w, &path);
    return path;
}

void blend_quotas(const double *weight, int n, uint64_t *quota) {
    uint64_t sum = 0;
    double frac[BLEND_MAX];
    for (int c = 0; c < n; c++) {
        double q = weight[c] * (double)BLEND_QUOTA;
        quota[c] = (uint64_t)q;
        frac[c] = q - (double)quota[c];
        sum += quota[c];
    }
    while (sum < BLEND_QUOTA) { /* largest remainder first, ties to the lower index */
        int best = 0;
        for (int c = 1; c < n; c++)
            if (frac[c] > frac[best]) best = c;
        quota[best]++, frac[best] = -1.0, sum++;
    }
    while (sum > BLEND_QUOTA) { /* the normalised weights summed to a hair over 1 */
        int best = 0;
        for (int c = 1; c < n; c++)
            if (quota[c] > quota[best]) best = c;
        quota[best]--, sum--;
    }
}

/* Rank 0: every corpus's tokenizer equals the first's. */
static int check_tokenizers(const Blend *b) {
    Tokenizer *first = tokenizer_load(b->path[0]);
    int rc = first ? 0 : -1;
    for (int c = 1; !rc && c < b->n; c++) {
        Tokenizer *t = tokenizer_load(b->path[c]);
        char why[256];
        if (!t) rc = -1;
        else if (!tokenizer_equal(first, t, why, sizeof why))
            rc = gpt_error("--data: %s and %s were prepared with different tokenizers (%s); a blend needs one",
                           b->path[0], b->path[c], why);
        tokenizer_free(t);
    }
    tokenizer_free(first);
    return rc;
}

/* Normalises the weights to sum 1 and gives them their quotas; a weight whose quota
 * rounds to 0 would never be sampled: -1 naming it. */
static int blend_weigh(Blend *b, const char *const *specs) {
    double largest = 0.0, total = 0.0;
    for (int c = 0; c < b->n; c++) total += b->weight[c], largest = fmax(largest, b->weight[c]);
    if (!isfinite(total)) { /* weights near DBL_MAX: their sum overflows, their ratios to the largest cannot */
        total = 0.0;
        for (int c = 0; c < b->n; c++) total += b->weight[c] /= largest;
    }
    for (int c = 0; c < b->n; c++) b->weight[c] /= total;
    blend_quotas(b->weight, b->n, b->quota);
    for (int c = 0; c < b->n; c++)
        if (b->quota[c] == 0)
            return gpt_error("--data %s: the weight is too small beside the others: its share rounds to 0 of "
                             "%llu samples, so the corpus would never be sampled", specs[c],
                             (unsigned long long)BLEND_QUOTA);
    return 0;
}

Blend *blend_open(const char *const *specs, int n) {
    Blend *b = xcalloc(1, sizeof *b);
    int rc = n < 1 || n > BLEND_MAX ? gpt_error("--data: between 1 and %d corpora, got %d", BLEND_MAX, n) : 0;
    for (int c = 0; !rc && c < n; c++) {
        if (split_spec(specs[c], &b->weight[c], &b->path[c]) && !(b->weight[c] > 0.0 && isfinite(b->weight[c])))
            rc = gpt_error("--data %s: the weight must be a positive number", specs[c]);
        for (int d = 0; !rc && d < c; d++)
            if (!strcmp(b->path[c], b->path[d])) rc = gpt_error("--data: %s is given twice", b->path[c]);
    }
    b->n = n;
    if (!rc) rc = blend_weigh(b, specs);
    if (dist_agree(rc)) {
        free(b);
        return NULL;
    }
    snprintf(b->spec, sizeof b->spec, "%s", b->path[0]);
    for (size_t c = 0, len = 0; n > 1 && c < (size_t)n && len < sizeof b->spec; c++)
        len += (size_t)snprintf(b->spec + len, sizeof b->spec - len, "%s%.6g:%s", c ? "," : "", b->weight[c],
                                b->path[c]);
    for (int c = 0; c < n && !rc; c++) {
        b->corpus[c] = corpus_open(b->path[c]);
        if ((rc = dist_agree(!b->corpus[c]))) break;
        uint64_t fp = 0;
        rc = dist_agree(corpus_fingerprint(b->corpus[c], &fp));
        b->fingerprint = n == 1 ? fp : rng_key(rng_key(c ? b->fingerprint : 0, fp), b->quota[c]);
    }
    if (!rc) rc = dist_agree(dist_rank() == 0 && n > 1 ? check_tokenizers(b) : 0);
    if (rc) {
        blend_close(b);
        return NULL;
    }
    return b;
}

void blend_close(Blend *b) {
    if (!b) return;
    for (int c = 0; c < b->n; c++) corpus_close(b->corpus[c]);
    free(b);
}

int blend_vocab_size(const Blend *b) { return corpus_vocab_size(b->corpus[0]); }

int blend_windows(Blend *b, int n_ctx) {
    for (int c = 0; c < b->n; c++) {
        int64_t n = corpus_split_tokens(b->corpus[c], SPLIT_TRAIN);
        if ((b->windows[c] = windows_in(n, n_ctx)) < 1)
            return gpt_error("%s: /train holds %lld tokens, fewer than one window of n_ctx + 1 = %d", b->path[c],
                             (long long)n, n_ctx + 1);
    }
    return 0;
}

void blend_split_windows(const Blend *b, int split, int n_ctx, int64_t cap, int64_t *n) {
    for (int c = 0; c < b->n; c++) {
        n[c] = windows_in(corpus_split_tokens(b->corpus[c], split), n_ctx);
        if (n[c] > cap) n[c] = cap;
    }
}

void blend_sample(const Blend *b, uint64_t seed, int64_t i, int *corpus, int64_t *window) {
    int64_t j;
    blend_pick(b->quota, b->n, i, corpus, &j);
    *window = sampler_window(seed, b->windows[*corpus], j);
}
