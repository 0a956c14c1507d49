/* corpus_output.c: the corpus file being written (corpus_parts.h): extensible,
 * chunked and checksummed /train and /val that the ranks append to collectively each
 * round (parallel HDF5 over MPI-IO), and the metadata rank 0 adds at the end. */
#include "corpus_parts.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "base/version.h"
#include "dist/dist.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/tokenizer_file.h"

#define WRITE_ROUND ((hsize_t)1 << 28)
/* Small enough that reading one training window verifies little more than itself
 * (Fletcher32 checks whole chunks); larger chunks did not write faster. */
#define TOKEN_CHUNK ((hsize_t)1 << 16)
#define OFFSET_CHUNK ((hsize_t)1 << 16)

/* Collective: writes count elements at offset of a 1-D dataset, in rounds. */
static int write_slice(hid_t d, hid_t mem_type, size_t elem, const void *data, hsize_t offset, hsize_t count) {
    long long rounds = (long long)((count + WRITE_ROUND - 1) / WRITE_ROUND);
    MPI_Allreduce(MPI_IN_PLACE, &rounds, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    int rc = 0;
    for (long long r = 0; r < rounds; r++) {
        hsize_t done = (hsize_t)r * WRITE_ROUND, n = count > done ? count - done : 0;
        if (n > WRITE_ROUND) n = WRITE_ROUND;
        hsize_t start = offset + done, one = n ? n : 1;
        hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &one, NULL);
        if (n) H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
        else H5Sselect_none(fs), H5Sselect_none(ms);
        if (H5Dwrite(d, mem_type, ms, fs, dxpl, (const char *)data + done * elem) < 0) rc = -1;
        H5Sclose(ms);
        H5Sclose(fs);
    }
    H5Pclose(dxpl);
    return rc;
}

static hid_t create_1d(hid_t g, const char *name, hid_t type, hsize_t n, hsize_t chunk) {
    hsize_t maxdims = H5S_UNLIMITED;
    hid_t space = H5Screate_simple(1, &n, &maxdims), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(g, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    return d;
}

static const char *const split_names[2] = {"train", "val"};

int corpus_output_create(Output *o, const char *tmp, int wide) {
    memset(o, 0, sizeof *o);
    o->wide = wide;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    /* the 1.8 format stores attributes over 64 KiB (thousands of input paths) densely */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    o->f = h5_fcreate(tmp, fapl);
    H5Pclose(fapl);
    if (o->f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = 0;
    for (int s = 0; s < 2; s++) {
        o->group[s] = H5Gcreate2(o->f, split_names[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        o->tokens[s] = create_1d(o->group[s], "tokens", wide ? H5T_STD_U32LE : H5T_STD_U16LE, 0, TOKEN_CHUNK);
        o->offsets[s] = create_1d(o->group[s], "doc_offsets", H5T_STD_I64LE, 0, OFFSET_CHUNK);
        if (o->group[s] < 0 || o->tokens[s] < 0 || o->offsets[s] < 0) rc = gpt_error("%s: cannot create /%s", tmp, split_names[s]);
    }
    return rc;
}

int corpus_output_close(Output *o) {
    if (o->f <= 0) return 0;
    for (int s = 0; s < 2; s++) {
        if (o->offsets[s] > 0) H5Dclose(o->offsets[s]);
        if (o->tokens[s] > 0) H5Dclose(o->tokens[s]);
        if (o->group[s] > 0) H5Gclose(o->group[s]);
    }
    int rc = H5Fclose(o->f) < 0 ? -1 : 0;
    o->f = 0;
    return rc;
}

static int extend(hid_t d, int64_t n) {
    hsize_t dims = (hsize_t)n;
    return H5Dset_extent(d, &dims) < 0 ? -1 : 0;
}

int corpus_output_append(Output *o, const Work *w, const char *split, const Counts *mine, const Counts *before,
                         const Counts *round) {
    hid_t mem_type = o->wide ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16;
    size_t elem = o->wide ? 4 : 2;
    int rc = 0;
    for (int s = 0; s < 2; s++) {
        void *buf = xmalloc((size_t)mine->tokens[s] * elem + 1);
        int64_t *offsets = xmalloc(((size_t)mine->docs[s] + 1) * sizeof *offsets);
        int64_t nt = 0, nd = 0, src = 0, at = o->done.tokens[s] + before->tokens[s];
        for (size_t k = 0; k < w->n_docs; src += w->doc_len[k++]) {
            if (split[k] != s) continue;
            offsets[nd++] = at + nt;
            for (int64_t j = 0; j < w->doc_len[k]; j++, nt++) {
                int32_t id = w->tokens.ids[src + j];
                if (o->wide) ((uint32_t *)buf)[nt] = (uint32_t)id;
                else ((uint16_t *)buf)[nt] = (uint16_t)id;
            }
        }
        if (extend(o->tokens[s], o->done.tokens[s] + round->tokens[s]) ||
            extend(o->offsets[s], o->done.docs[s] + round->docs[s]) ||
            write_slice(o->tokens[s], mem_type, elem, buf, (hsize_t)at, (hsize_t)nt) ||
            write_slice(o->offsets[s], H5T_NATIVE_INT64, 8, offsets, (hsize_t)(o->done.docs[s] + before->docs[s]),
                        (hsize_t)nd))
            rc = -1;
        free(buf);
        free(offsets);
        o->done.tokens[s] += round->tokens[s];
        o->done.docs[s] += round->docs[s];
    }
    return rc;
}

uint64_t corpus_file_bytes_needed(const Counts *c, size_t elem, const Tokenizer *t) {
    uint64_t b = 2 * H5_FILE_OVERHEAD + tokenizer_h5_bytes(t);
    for (int s = 0; s < 2; s++) {
        uint64_t tc = ((uint64_t)c->tokens[s] + TOKEN_CHUNK - 1) / TOKEN_CHUNK;
        uint64_t oc = ((uint64_t)c->docs[s] + 1 + OFFSET_CHUNK - 1) / OFFSET_CHUNK;
        b += tc * (TOKEN_CHUNK * elem + 64) + oc * (OFFSET_CHUNK * 8 + 64) + 8192;
    }
    return b;
}

int corpus_reserve(const char *out, const char *tmp, const Counts *c, size_t elem, const Tokenizer *t) {
    return dist_agree(dist_rank() == 0 ? h5_reserve(out, tmp, corpus_file_bytes_needed(c, elem, t), "the corpus") : 0);
}

int corpus_output_finish(Output *o) {
    int rc = 0;
    for (int s = 0; s < 2; s++) {
        int64_t end = o->done.tokens[s];
        if (extend(o->offsets[s], o->done.docs[s] + 1) ||
            write_slice(o->offsets[s], H5T_NATIVE_INT64, 8, &end, (hsize_t)o->done.docs[s], dist_rank() == 0))
            rc = -1;
    }
    return rc;
}

int corpus_write_metadata(const char *tmp, const Tokenizer *t, const Stream *s, const Counts *total,
                          const PrepareOptions *opt) {
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return -1;
    int64_t *sizes = xmalloc((size_t)s->n * sizeof *sizes);
    const char **paths = xmalloc((size_t)s->n * sizeof *paths);
    for (int i = 0; i < s->n; i++) sizes[i] = s->in[i].file_size, paths[i] = s->in[i].path;
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    H5Tset_cset(str, H5T_CSET_UTF8);
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    int rc = tokenizer_write_h5(t, f) || h5_write_attr_string(f, "format", CORPUS_FORMAT) ||
             h5_write_attr_int(f, "format_version", CORPUS_FORMAT_VERSION) || h5_write_attr_string(f, "tool_version", GPT_VERSION) ||
             h5_write_attr_string(f, "created", created) ||
             h5_write_attr_int(f, "vocab_size", tokenizer_vocab_size(t)) ||
             h5_write_attr_int(f, "eot_token", tokenizer_special_id(t, TOK_EOT)) ||
             h5_write_attr_i64(f, "train_tokens", total->tokens[0]) ||
             h5_write_attr_i64(f, "train_docs", total->docs[0]) ||
             h5_write_attr_i64(f, "val_tokens", total->tokens[1]) ||
             h5_write_attr_i64(f, "val_docs", total->docs[1]) ||
             h5_write_attr_float(f, "val_fraction", (float)opt->val_fraction) ||
             h5_write_attr_int(f, "split_on_blank_lines", opt->split_on_blank_lines) ||
             h5_write_attr_array(f, "input_files", str, str, (hsize_t)s->n, paths) ||
             h5_write_attr_array(f, "input_bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)s->n, sizes);
    H5Tclose(str);
    free(sizes);
    free(paths);
    if (H5Fclose(f) < 0) rc = -1;
    return rc;
}

