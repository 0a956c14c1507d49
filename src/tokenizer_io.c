/* tokenizer_io.c: tokenizers in and out of files: the HDF5 /tokenizer group that
 * tokenizer files, corpora and checkpoints carry, a fresh tokenizer from learned
 * merges, and GPT-2's vocabulary in OpenAI's and tiktoken's formats.
 *
 * Imports rebuild the merge list, because encoding follows merges: OpenAI's vocab.bpe
 * lists them; tiktoken's file only ranks tokens, so each token's merge is found by
 * running BPE over its bytes with the lower-ranked tokens until two parts remain. */
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "hashmap.h"
#include "tokenizer.h"
#include "util.h"
#include "version.h"

#define TOKENIZER_FORMAT "gpt-tokenizer"

/* ---- a growing vocabulary under construction ---- */

typedef struct {
    uint8_t *bytes;
    int64_t *offsets; /* n + 1 */
    int n, cap;
    size_t nbytes, bytes_cap;
    HashMap by_bytes; /* hash_bytes -> id, colliding entries walked with hm_get_next */
} Vocab;

static void vocab_init(Vocab *v) {
    memset(v, 0, sizeof *v);
    v->offsets = xmalloc(sizeof *v->offsets);
    v->offsets[0] = 0;
    hm_init(&v->by_bytes, 1024);
}

static void vocab_free(Vocab *v) {
    free(v->bytes);
    free(v->offsets);
    hm_free(&v->by_bytes);
}

static int32_t vocab_find(const Vocab *v, const uint8_t *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    for (const int64_t *s = hm_get(&v->by_bytes, h); s; s = hm_get_next(&v->by_bytes, h, s)) {
        int32_t id = (int32_t)*s;
        if ((size_t)(v->offsets[id + 1] - v->offsets[id]) == n && !memcmp(v->bytes + v->offsets[id], p, n))
            return id;
    }
    return -1;
}

/* Sets token `id` (ids must be added densely, in any order, before vocab_finish). */
static void vocab_add(Vocab *v, const uint8_t *p, size_t n) {
    if (v->n + 1 >= v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->offsets = xrealloc(v->offsets, ((size_t)v->cap + 1) * sizeof *v->offsets);
    }
    while (v->nbytes + n > v->bytes_cap) {
        v->bytes_cap = v->bytes_cap ? 2 * v->bytes_cap : 1 << 16;
        v->bytes = xrealloc(v->bytes, v->bytes_cap);
    }
    memcpy(v->bytes + v->nbytes, p, n);
    v->nbytes += n;
    hm_put_dup(&v->by_bytes, hash_bytes(p, n), v->n);
    v->offsets[++v->n] = (int64_t)v->nbytes;
}

static size_t vocab_len(const Vocab *v, int32_t id) { return (size_t)(v->offsets[id + 1] - v->offsets[id]); }

static const char *const special_defaults[] = {TOK_EOT, TOK_START, TOK_DELIM, TOK_EXTRACT};

Tokenizer *tokenizer_from_merges(const int32_t (*merges)[2], int n_merges) {
    Vocab v;
    vocab_init(&v);
    for (int b = 0; b < 256; b++) vocab_add(&v, (const uint8_t[]){(uint8_t)b}, 1);
    int32_t(*m3)[3] = xmalloc(((size_t)n_merges + 1) * sizeof *m3);
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (int k = 0; k < n_merges; k++) {
        int32_t l = merges[k][0], r = merges[k][1];
        if (l < 0 || r < 0 || l >= v.n || r >= v.n) {
            gpt_error("merge %d (%d, %d) names a token that does not exist yet", k, l, r);
            free(buf), free(m3), vocab_free(&v);
            return NULL;
        }
        size_t n = vocab_len(&v, l) + vocab_len(&v, r);
        if (n > cap) buf = xrealloc(buf, cap = 2 * n);
        memcpy(buf, v.bytes + v.offsets[l], vocab_len(&v, l));
        memcpy(buf + vocab_len(&v, l), v.bytes + v.offsets[r], vocab_len(&v, r));
        m3[k][0] = l, m3[k][1] = r, m3[k][2] = v.n;
        vocab_add(&v, buf, n);
    }
    int32_t ids[4];
    for (int i = 0; i < 4; i++) ids[i] = v.n + i;
    Tokenizer *t = tokenizer_create(v.bytes, v.offsets, v.n, (const int32_t(*)[3])m3, n_merges,
                                    special_defaults, ids, 4);
    free(buf), free(m3), vocab_free(&v);
    return t;
}

/* ---- GPT-2's byte <-> unicode mapping (OpenAI's encoder.json and vocab.bpe) ---- */

/* The code point OpenAI uses for byte b: printable Latin-1 bytes stand for themselves,
 * the others are shifted to 256 and up in byte order. */
static void byte_to_unicode_table(int table[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        table[b] = printable ? b : 256 + n++;
    }
}

/* Decodes an OpenAI token string (UTF-8 of mapped code points) into raw bytes. */
static int unicode_to_bytes(const char *s, const int inverse[512], uint8_t *out, size_t *n) {
    size_t k = 0;
    for (const uint8_t *p = (const uint8_t *)s; *p;) {
        int cp, len;
        if (*p < 0x80) cp = *p, len = 1;
        else if ((*p & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) cp = (*p & 0x1F) << 6 | (p[1] & 0x3F), len = 2;
        else return -1;
        if (cp >= 512 || inverse[cp] < 0) return -1;
        out[k++] = (uint8_t)inverse[cp];
        p += len;
    }
    *n = k;
    return 0;
}

static Tokenizer *finish_gpt2(Vocab *v, int32_t (*m3)[3], int n_merges) {
    const char *names[1] = {TOK_EOT};
    int32_t ids[1] = {v->n};
    return tokenizer_create(v->bytes, v->offsets, v->n, (const int32_t(*)[3])m3, n_merges, names, ids, 1);
}

Tokenizer *tokenizer_import_gpt2(const char *encoder_json, const char *vocab_bpe) {
    json_error_t jerr;
    json_t *enc = json_load_file(encoder_json, 0, &jerr);
    if (!enc) return gpt_error("%s: not valid JSON (line %d: %s)", encoder_json, jerr.line, jerr.text), NULL;
    if (!json_is_object(enc)) {
        json_decref(enc);
        return gpt_error("%s: expected a JSON object mapping token strings to ids", encoder_json), NULL;
    }
    int table[256], inverse[512];
    byte_to_unicode_table(table);
    for (int i = 0; i < 512; i++) inverse[i] = -1;
    for (int b = 0; b < 256; b++) inverse[table[b]] = b;

    /* ids must be dense 0..N-1 with <|endoftext|> last */
    size_t n = json_object_size(enc);
    const char **by_id = xcalloc(n, sizeof *by_id);
    const char *key;
    json_t *val;
    Tokenizer *t = NULL;
    int eot = -1;
    json_object_foreach(enc, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || (size_t)id >= n || by_id[id]) {
            gpt_error("%s: token '%s' has id %s, expected distinct ids 0..%zu", encoder_json, key,
                      json_is_integer(val) ? "out of range or repeated" : "that is not an integer", n - 1);
            goto out;
        }
        by_id[id] = key;
        if (!strcmp(key, TOK_EOT)) eot = (int)id;
    }
    if (eot != (int)n - 1) {
        gpt_error("%s: expected %s as the last id (%zu)", encoder_json, TOK_EOT, n - 1);
        goto out;
    }
    Vocab v;
    vocab_init(&v);
    uint8_t buf[1024];
    for (size_t id = 0; id + 1 < n; id++) {
        size_t len;
        if (strlen(by_id[id]) >= sizeof buf || unicode_to_bytes(by_id[id], inverse, buf, &len) || len == 0) {
            gpt_error("%s: token %zu ('%s') is not in GPT-2's byte-to-unicode encoding", encoder_json, id, by_id[id]);
            vocab_free(&v);
            goto out;
        }
        vocab_add(&v, buf, len);
    }
    FILE *f = fopen(vocab_bpe, "r");
    if (!f) {
        gpt_error("%s: cannot open: %s", vocab_bpe, strerror(errno));
        vocab_free(&v);
        goto out;
    }
    int32_t(*m3)[3] = NULL;
    int n_merges = 0, cap = 0, lineno = 0, bad = 0;
    char line[4096];
    while (!bad && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (lineno == 1 && !strncmp(line, "#version", 8)) continue;
        if (!line[0]) continue;
        char *sp = strchr(line, ' ');
        uint8_t lb[1024], rb[1024];
        size_t ll, rl;
        int32_t l, r, res;
        if (!sp || strchr(sp + 1, ' ') || (*sp = '\0', unicode_to_bytes(line, inverse, lb, &ll)) ||
            unicode_to_bytes(sp + 1, inverse, rb, &rl) || (l = vocab_find(&v, lb, ll)) < 0 ||
            (r = vocab_find(&v, rb, rl)) < 0) {
            bad = gpt_error("%s:%d: expected a merge 'LEFT RIGHT' of two tokens of %s", vocab_bpe, lineno, encoder_json);
            break;
        }
        memcpy(lb + ll, rb, rl);
        if ((res = vocab_find(&v, lb, ll + rl)) < 0) {
            bad = gpt_error("%s:%d: the merge's result is not a token of %s", vocab_bpe, lineno, encoder_json);
            break;
        }
        if (n_merges == cap) m3 = xrealloc(m3, (size_t)(cap = cap ? 2 * cap : 1024) * sizeof *m3);
        m3[n_merges][0] = l, m3[n_merges][1] = r, m3[n_merges][2] = res;
        n_merges++;
    }
    fclose(f);
    if (!bad) t = finish_gpt2(&v, m3, n_merges);
    free(m3);
    vocab_free(&v);
out:
    free(by_id);
    json_decref(enc);
    return t;
}

static int base64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with padding; -1 on anything else. */
static int base64_decode(const char *s, size_t n, uint8_t *out, size_t *out_len) {
    if (n == 0 || n % 4) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            v[j] = s[i + j] == '=' && i + 4 == n && j >= 2 ? 0 : base64_value((unsigned char)s[i + j]);
            if (v[j] < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[k++] = (uint8_t)(w >> 16);
        if (s[i + 2] != '=') out[k++] = (uint8_t)(w >> 8);
        if (s[i + 3] != '=') out[k++] = (uint8_t)w;
    }
    *out_len = k;
    return 0;
}

/* The merge that forms token `rank`: BPE over its bytes with concatenation ranks below
 * `rank` (tiktoken's rule), which must leave exactly two parts. */
static int derive_merge(const Vocab *v, int32_t rank, int32_t out[3], int32_t *part, size_t *start) {
    const uint8_t *p = v->bytes + v->offsets[rank];
    size_t n = vocab_len(v, rank), parts = n;
    for (size_t i = 0; i <= n; i++) start[i] = i;
    for (;;) {
        int32_t best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++) {
            int32_t r = vocab_find(v, p + start[i], start[i + 2] - start[i]);
            if (r >= 0 && r < rank && (best < 0 || r < best)) best = r, at = i;
        }
        if (best < 0) break;
        memmove(start + at + 1, start + at + 2, (parts - at - 1) * sizeof *start);
        parts--;
    }
    if (parts != 2) return -1;
    for (int j = 0; j < 2; j++) part[j] = vocab_find(v, p + start[j], start[j + 1] - start[j]);
    out[0] = part[0], out[1] = part[1], out[2] = rank;
    return 0;
}

Tokenizer *tokenizer_import_tiktoken(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return gpt_error("%s: cannot open: %s", path, strerror(errno)), NULL;
    Vocab v;
    vocab_init(&v);
    char line[4096];
    int lineno = 0, bad = 0;
    while (!bad && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        char *sp = strchr(line, ' ');
        uint8_t bytes[3072];
        size_t n;
        long rank;
        if (!sp || base64_decode(line, (size_t)(sp - line), bytes, &n) || parse_long(sp + 1, &rank) ||
            rank != v.n)
            bad = gpt_error("%s:%d: expected 'BASE64 RANK' with rank %d (ranks count up from 0)", path, lineno, v.n);
        else if (vocab_find(&v, bytes, n) >= 0)
            bad = gpt_error("%s:%d: token repeats an earlier one", path, lineno);
        else
            vocab_add(&v, bytes, n);
    }
    fclose(f);
    Tokenizer *t = NULL;
    if (!bad && v.n < 256) gpt_error("%s: %d tokens; a byte-level vocabulary needs at least 256", path, v.n), bad = 1;
    if (!bad) {
        int32_t(*m3)[3] = xmalloc((size_t)v.n * sizeof *m3);
        size_t maxlen = 0;
        for (int i = 0; i < v.n; i++) maxlen = vocab_len(&v, i) > maxlen ? vocab_len(&v, i) : maxlen;
        size_t *start = xmalloc((maxlen + 2) * sizeof *start);
        int n_merges = 0;
        for (int32_t r = 0; r < v.n && !bad; r++) {
            int32_t part[2];
            if (vocab_len(&v, r) < 2) continue;
            if (derive_merge(&v, r, m3[n_merges], part, start))
                bad = gpt_error("%s: token of rank %d is not a merge of two lower-ranked tokens", path, r);
            else
                n_merges++;
        }
        if (!bad) t = finish_gpt2(&v, m3, n_merges);
        free(start);
        free(m3);
    }
    vocab_free(&v);
    return t;
}

/* ---- HDF5 ---- */

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
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return gpt_error("%s: path too long", path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = h5_write_attr_string(f, "format", TOKENIZER_FORMAT) ||
             h5_write_attr_int(f, "format_version", 1) ||
             h5_write_attr_string(f, "tool_version", GPT_VERSION) || tokenizer_write_h5(t, f);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc || rename(tmp, path)) {
        remove(tmp);
        return gpt_error("%s: writing the tokenizer failed", path);
    }
    return 0;
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
