/* tokenizer_file.c: the /tokenizer group that tokenizer files, corpora, checkpoints,
 * model and task files carry (tokenizer_file.h), and the tokenizer file itself, written
 * through base/atomic.h. */
#include "files/tokenizer_file.h"

#include <hdf5.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic.h"
#include "base/util.h"
#include "base/version.h"
#include "files/formats.h"
#include "files/h5util.h"

int tokenizer_write_h5(const Tokenizer *t, int64_t loc_id) {
    TokenizerParts p = tokenizer_parts(t);
    hid_t g = H5Gcreate2((hid_t)loc_id, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    hsize_t nb = (hsize_t)p.token_offsets[p.n_tokens], no = (hsize_t)p.n_tokens + 1;
    hsize_t dm[2] = {(hsize_t)p.n_merges, 3}, ns = (hsize_t)p.n_special;
    int rc = h5_write_attr_string(g, "type", "byte-bpe") ||
             h5_write_attr_string(g, "pattern", PRETOK_PATTERN) ||
             h5_write_attr_int(g, "vocab_size", tokenizer_vocab_size(t)) ||
             h5_write_attr_int(g, "n_merges", p.n_merges) ||
             h5_write_attr_int(g, "eot_token", tokenizer_special_id(t, TOK_EOT)) ||
             h5_write_array(g, "token_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &nb, p.token_bytes) ||
             h5_write_array(g, "token_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &no, p.token_offsets) ||
             h5_write_array(g, "merges", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, dm, p.merges) ||
             h5_write_strings(g, "special_tokens", p.special_names, ns) ||
             h5_write_array(g, "special_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &ns, p.special_ids);
    H5Gclose(g);
    return rc ? -1 : 0;
}

Tokenizer *tokenizer_read_h5(int64_t loc_id, const char *path) {
    hid_t loc = (hid_t)loc_id;
    if (H5Lexists(loc, "tokenizer", H5P_DEFAULT) <= 0)
        return gpt_error("%s: no /tokenizer group (not a tokenizer, corpus or checkpoint file)", path), NULL;
    hid_t g = H5Gopen2(loc, "tokenizer", H5P_DEFAULT);
    char type[32], pattern[1024];
    int vocab_size;
    Tokenizer *t = NULL;
    hsize_t nb, no, dm[2], ns, ni;
    uint8_t *bytes = NULL;
    int64_t *offsets = NULL;
    int32_t(*merges)[3] = NULL, *ids = NULL;
    char **names = NULL;
    if (h5_read_attr_string(path, "/tokenizer", g, "type", type, sizeof type) ||
        h5_read_attr_string(path, "/tokenizer", g, "pattern", pattern, sizeof pattern) ||
        h5_read_attr_int(path, "/tokenizer", g, "vocab_size", &vocab_size))
        goto out;
    if (strcmp(type, "byte-bpe")) {
        gpt_error("%s: /tokenizer type is '%s', expected 'byte-bpe'", path, type);
        goto out;
    }
    if (strcmp(pattern, PRETOK_PATTERN)) {
        gpt_error("%s: /tokenizer uses a pre-tokenization pattern this version does not support", path);
        goto out;
    }
    /* special_tokens: fixed-length strings, or variable-length ones in files of version 0.1 */
    hid_t d = H5Lexists(g, "special_tokens", H5P_DEFAULT) > 0 ? H5Dopen2(g, "special_tokens", H5P_DEFAULT) : -1;
    hid_t str = d >= 0 ? H5Dget_type(d) : H5Tcopy(H5T_C_S1);
    if (d >= 0) H5Dclose(d);
    int vlen = H5Tis_variable_str(str) > 0;
    size_t width = vlen ? sizeof(char *) : H5Tget_size(str);
    char *fixed = NULL;
    if ((bytes = h5_read_all(path, "/tokenizer", g, "token_bytes", 1, H5T_NATIVE_UINT8, 1, &nb)) &&
        (offsets = h5_read_all(path, "/tokenizer", g, "token_offsets", 1, H5T_NATIVE_INT64, 8, &no)) &&
        (merges = h5_read_all(path, "/tokenizer", g, "merges", 2, H5T_NATIVE_INT32, 12, dm)) &&
        (vlen ? (names = h5_read_all(path, "/tokenizer", g, "special_tokens", 1, str, width, &ns)) != NULL
              : (fixed = h5_read_all(path, "/tokenizer", g, "special_tokens", 1, str, width, &ns)) != NULL) &&
        (ids = h5_read_all(path, "/tokenizer", g, "special_ids", 1, H5T_NATIVE_INT32, 4, &ni))) {
        if (fixed) { /* NUL-terminate each name and point at it */
            names = xmalloc(sizeof(char *) * ((size_t)ns + 1));
            for (hsize_t i = 0; i < ns; i++) {
                names[i] = fixed + i * width;
                names[i][width - 1] = '\0';
            }
        }
        if (no < 1 || (hsize_t)offsets[no - 1] != nb || dm[1] != 3 || ns != ni || no > INT_MAX || dm[0] > INT_MAX)
            gpt_error("%s: /tokenizer datasets disagree in size", path);
        else if ((t = tokenizer_create(bytes, offsets, (int)no - 1, (const int32_t(*)[3])merges, (int)dm[0],
                                       (const char *const *)names, ids, (int)ns)) == NULL) {
            char why[512];
            snprintf(why, sizeof why, "%s", gpt_last_error());
            gpt_error("%s: invalid /tokenizer: %s", path, why);
        } else if (tokenizer_vocab_size(t) != vocab_size) {
            gpt_error("%s: /tokenizer vocab_size %d disagrees with its %d tokens", path, vocab_size, tokenizer_vocab_size(t));
            tokenizer_free(t);
            t = NULL;
        }
    }
    if (names && vlen) { /* frees the strings HDF5 allocated, not the array */
        hid_t space = H5Screate_simple(1, &ns, NULL);
        H5Dvlen_reclaim(str, space, H5P_DEFAULT, names);
        H5Sclose(space);
    }
    H5Tclose(str);
    free(fixed);
out:
    free(bytes);
    free(offsets);
    free(merges);
    free(names);
    free(ids);
    H5Gclose(g);
    return t;
}

int tokenizer_save(const Tokenizer *t, const char *path) {
    h5_quiet();
    char tmp[PATH_MAX];
    if (atomic_tmp_path(path, tmp, sizeof tmp)) return -1;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = h5_write_attr_string(f, "format", TOKENIZER_FORMAT) ||
             h5_write_attr_int(f, "format_version", TOKENIZER_FORMAT_VERSION) ||
             h5_write_attr_string(f, "tool_version", GPT_VERSION) || tokenizer_write_h5(t, f);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc) {
        remove(tmp);
        return gpt_error("%s: writing the tokenizer failed", path);
    }
    return atomic_publish(tmp, path);
}

Tokenizer *tokenizer_load(const char *path) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NULL;
    Tokenizer *t = tokenizer_read_h5(f, path);
    H5Fclose(f);
    return t;
}

uint64_t tokenizer_h5_bytes(const Tokenizer *tok) {
    if (!tok) return 0;
    TokenizerParts p = tokenizer_parts(tok);
    uint64_t width = 1; /* of the special tokens' names, as h5_write_strings stores them */
    for (int i = 0; i < p.n_special; i++)
        if (strlen(p.special_names[i]) + 1 > width) width = strlen(p.special_names[i]) + 1;
    uint64_t n_tokens = (uint64_t)p.n_tokens, n_special = (uint64_t)p.n_special;
    return h5_array_bytes((uint64_t)p.token_offsets[p.n_tokens], 1) + h5_array_bytes(n_tokens + 1, sizeof(int64_t)) +
           h5_array_bytes((uint64_t)p.n_merges, 3 * sizeof(int32_t)) + h5_array_bytes(n_special, width) +
           h5_array_bytes(n_special, sizeof(int32_t));
}
