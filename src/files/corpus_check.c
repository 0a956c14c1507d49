/* corpus_check.c: a corpus file verified whole (corpus_check.h), with the serial driver. */
#include "files/corpus_check.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "files/data.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/tokenizer_file.h"

/* Elements read at once: memory stays bounded whatever the corpus's size. */
#define CHECK_BLOCK ((hsize_t)1 << 20)

/* Reads elements [start, start + n) of a 1-D dataset; -1 on a checksum mismatch. */
static int read_block(hid_t d, hid_t mem_type, hsize_t start, hsize_t n, void *buf) {
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &n, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
    herr_t rc = H5Dread(d, mem_type, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

/* Every token and offset of a split, block by block; first (n_first) receives the
 * split's first tokens. */
static int check_split(const char *path, hid_t f, const char *split, int64_t tokens, int64_t docs, int vocab,
                       int32_t *first, int *n_first) {
    char where[16];
    snprintf(where, sizeof where, "/%s", split);
    hid_t g = H5Lexists(f, split, H5P_DEFAULT) > 0 ? H5Gopen2(f, split, H5P_DEFAULT) : -1;
    if (g < 0) return gpt_error("%s: group %s is missing", path, where);
    hsize_t nt, nd;
    hid_t dt = h5_open_dataset(path, where, g, "tokens", 1, &nt);
    hid_t dd = dt < 0 ? -1 : h5_open_dataset(path, where, g, "doc_offsets", 1, &nd);
    int rc = dt < 0 || dd < 0;
    if (!rc && (nt != (hsize_t)tokens || nd != (hsize_t)docs + 1))
        rc = gpt_error("%s: %s holds %llu tokens and %llu offsets, its attributes say %lld and %lld + 1", path,
                       where, (unsigned long long)nt, (unsigned long long)nd, (long long)tokens, (long long)docs);
    uint32_t *tok = xmalloc(CHECK_BLOCK * sizeof *tok);
    int64_t *off = xmalloc(CHECK_BLOCK * sizeof *off), prev = -1;
    for (hsize_t b = 0; !rc && b < nt; b += CHECK_BLOCK) {
        hsize_t n = nt - b < CHECK_BLOCK ? nt - b : CHECK_BLOCK;
        if (read_block(dt, H5T_NATIVE_UINT32, b, n, tok))
            rc = gpt_error("%s: cannot read %s/tokens (checksum mismatch: the file is corrupted)", path, where);
        for (hsize_t i = 0; !rc && i < n; i++)
            if (tok[i] >= (uint32_t)vocab)
                rc = gpt_error("%s: %s/tokens[%llu] = %u is outside the vocabulary", path, where,
                               (unsigned long long)(b + i), tok[i]);
        if (first && b == 0 && !rc)
            for (*n_first = 0; (hsize_t)*n_first < n && *n_first < CORPUS_CHECK_FIRST; ++*n_first)
                first[*n_first] = (int32_t)tok[*n_first];
    }
    for (hsize_t b = 0; !rc && b < nd; b += CHECK_BLOCK) {
        hsize_t n = nd - b < CHECK_BLOCK ? nd - b : CHECK_BLOCK;
        if (read_block(dd, H5T_NATIVE_INT64, b, n, off))
            rc = gpt_error("%s: cannot read %s/doc_offsets (checksum mismatch: the file is corrupted)", path, where);
        for (hsize_t i = 0; !rc && i < n; i++) {
            hsize_t k = b + i;
            if ((k == 0 && off[i] != 0) || (k > 0 && off[i] <= prev) || (k + 1 == nd && off[i] != tokens))
                rc = gpt_error("%s: %s/doc_offsets[%llu] = %lld is out of order", path, where, (unsigned long long)k,
                               (long long)off[i]);
            prev = off[i];
        }
    }
    free(tok);
    free(off);
    if (dd >= 0) H5Dclose(dd);
    if (dt >= 0) H5Dclose(dt);
    H5Gclose(g);
    return rc;
}

int corpus_check(const char *path, CorpusCheck *out) {
    *out = (CorpusCheck){0};
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    int rc = h5_expect_format(path, f, CORPUS_FORMAT, "a corpus (made by gpt prepare)") ||
             h5_read_attr_int(path, "", f, "vocab_size", &out->vocab_size) ||
             h5_read_attr_int(path, "", f, "eot_token", &out->eot_token) ||
             h5_read_attr_i64(path, "", f, "train_tokens", &out->tokens[SPLIT_TRAIN]) ||
             h5_read_attr_i64(path, "", f, "train_docs", &out->docs[SPLIT_TRAIN]) ||
             h5_read_attr_i64(path, "", f, "val_tokens", &out->tokens[SPLIT_VAL]) ||
             h5_read_attr_i64(path, "", f, "val_docs", &out->docs[SPLIT_VAL])
                 ? -1
                 : 0;
    if (!rc && !(out->tok = tokenizer_read_h5(f, path))) rc = -1;
    if (!rc && tokenizer_vocab_size(out->tok) != out->vocab_size)
        rc = gpt_error("%s: vocab_size %d, but its tokenizer has %d tokens", path, out->vocab_size,
                       tokenizer_vocab_size(out->tok));
    if (!rc)
        rc = check_split(path, f, "train", out->tokens[SPLIT_TRAIN], out->docs[SPLIT_TRAIN], out->vocab_size,
                         out->first, &out->n_first) ||
             check_split(path, f, "val", out->tokens[SPLIT_VAL], out->docs[SPLIT_VAL], out->vocab_size, NULL, NULL);
    H5Fclose(f);
    if (rc) {
        tokenizer_free(out->tok);
        out->tok = NULL;
    }
    return rc ? -1 : 0;
}
