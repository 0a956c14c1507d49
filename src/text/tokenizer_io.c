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
#include <unistd.h>

#include "files/h5util.h"
#include "base/hashmap.h"
#include "text/tokenizer.h"
#include "base/util.h"
#include "base/version.h"
#include "files/formats.h"


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

/* ---- Hugging Face's spelled vocabularies: encoder.json/vocab.json + vocab.bpe/merges.txt, tokenizer.json ---- */

/* A vocabulary as these files spell it: each id's token in GPT-2's byte-to-unicode
 * encoding, the merges as pairs of spellings in rank order, and the special tokens the
 * file names as such (tokenizer.json's added_tokens). Any other token that is neither a
 * byte nor a merge's result is special too (GPT-2's <|endoftext|> in encoder.json);
 * special tokens must have the highest ids. */
typedef struct {
    const char *vocab_path, *vocab_field;   /* for messages: "FILE" and "" or ": model.vocab" */
    const char **by_id;                     /* n spellings, ids 0..n-1 */
    size_t n;
    const char *merges_path, *merges_field;
    const char **left, **right;             /* n_merges pairs */
    const int *merge_line;                  /* line of each merge in merges_path, or NULL: its index */
    int n_merges;
    const char *const *special;             /* n_special token contents known to be special */
    int n_special;
} SpelledBpe;

static void merge_where(const SpelledBpe *s, int k, char *buf, size_t size) {
    if (s->merge_line) snprintf(buf, size, "%s:%d", s->merges_path, s->merge_line[k]);
    else snprintf(buf, size, "%s%s[%d]", s->merges_path, s->merges_field, k);
}

static Tokenizer *tokenizer_from_spelled(const SpelledBpe *s) {
    int table[256], inverse[512];
    byte_to_unicode_table(table);
    for (int i = 0; i < 512; i++) inverse[i] = -1;
    for (int b = 0; b < 256; b++) inverse[table[b]] = b;
    if (s->n > INT32_MAX) return gpt_error("%s%s: too many tokens", s->vocab_path, s->vocab_field), NULL;
    uint8_t *is_special = xcalloc(s->n, 1), *produced = xcalloc(s->n, 1);
    int32_t(*m3)[3] = xmalloc(((size_t)s->n_merges + 1) * sizeof *m3);
    size_t buf_cap = 1024;
    uint8_t *buf = xmalloc(buf_cap), *rb = xmalloc(buf_cap);
    Tokenizer *t = NULL;
    Vocab v;
    vocab_init(&v);
    for (size_t id = 0; id < s->n; id++) {
        size_t len, slen = strlen(s->by_id[id]);
        int known = 0;
        for (int k = 0; k < s->n_special && !known; k++) known = !strcmp(s->special[k], s->by_id[id]);
        if (slen >= buf_cap) buf = xrealloc(buf, buf_cap = 2 * slen + 1), rb = xrealloc(rb, buf_cap);
        /* a special token is its name; an ordinary one must decode (else it can only be special) */
        if (known || unicode_to_bytes(s->by_id[id], inverse, buf, &len) || len == 0) {
            is_special[id] = 1;
            memcpy(buf, s->by_id[id], len = slen);
        }
        vocab_add(&v, buf, len);
    }
    for (int k = 0; k < s->n_merges; k++) {
        size_t ll, rl;
        int32_t l = -1, r = -1, res = -1;
        size_t need = strlen(s->left[k]) + strlen(s->right[k]) + 1;
        if (need >= buf_cap) buf = xrealloc(buf, buf_cap = 2 * need), rb = xrealloc(rb, buf_cap);
        char where[PATH_MAX + 64];
        merge_where(s, k, where, sizeof where);
        if (unicode_to_bytes(s->left[k], inverse, buf, &ll) || unicode_to_bytes(s->right[k], inverse, rb, &rl) ||
            (l = vocab_find(&v, buf, ll)) < 0 || (r = vocab_find(&v, rb, rl)) < 0 || is_special[l] || is_special[r]) {
            gpt_error("%s: expected a merge 'LEFT RIGHT' of two tokens of %s%s, got '%s %s'", where, s->vocab_path,
                      s->vocab_field, s->left[k], s->right[k]);
            goto out;
        }
        memcpy(buf + ll, rb, rl);
        if ((res = vocab_find(&v, buf, ll + rl)) < 0 || is_special[res]) {
            gpt_error("%s: the merge's result '%s%s' is not a token of %s%s", where, s->left[k], s->right[k],
                      s->vocab_path, s->vocab_field);
            goto out;
        }
        m3[k][0] = l, m3[k][1] = r, m3[k][2] = res;
        produced[res] = 1;
    }
    /* ordinary tokens: the bytes and the merges' results, ids 0..n_tokens-1; special ones after */
    int n_tokens = 0, n_special = 0;
    for (size_t id = 0; id < s->n; id++) {
        if (!is_special[id] && !produced[id] && vocab_len(&v, (int32_t)id) > 1) is_special[id] = 1;
        if (is_special[id]) n_special++;
        else if (n_special) {
            gpt_error("%s%s: token %zu ('%s') comes after the special token '%s'; special tokens must have the "
                      "highest ids", s->vocab_path, s->vocab_field, id, s->by_id[id], s->by_id[n_tokens]);
            goto out;
        } else n_tokens++;
    }
    const char **names = xmalloc(((size_t)n_special + 1) * sizeof *names);
    int32_t *ids = xmalloc(((size_t)n_special + 1) * sizeof *ids);
    for (int k = 0; k < n_special; k++) names[k] = s->by_id[n_tokens + k], ids[k] = n_tokens + k;
    t = tokenizer_create(v.bytes, v.offsets, n_tokens, (const int32_t(*)[3])m3, s->n_merges, names, ids, n_special);
    if (!t) {
        char why[512];
        snprintf(why, sizeof why, "%s", gpt_last_error());
        gpt_error("%s%s: not a byte-level BPE vocabulary (%s)", s->vocab_path, s->vocab_field, why);
    }
    free(names);
    free(ids);
out:
    vocab_free(&v);
    free(m3), free(buf), free(rb), free(is_special), free(produced);
    return t;
}

/* vocab (a JSON object of spelling -> id) as spellings by id; NULL naming PATH FIELD. */
static const char **spellings_by_id(json_t *vocab, const char *path, const char *field, size_t *n) {
    if (!json_is_object(vocab))
        return gpt_error("%s%s: expected a JSON object mapping token strings to ids", path, field), NULL;
    *n = json_object_size(vocab);
    const char **by_id = xcalloc(*n ? *n : 1, sizeof *by_id);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || (size_t)id >= *n || by_id[id]) {
            gpt_error("%s%s: token '%s' has id %s, expected distinct ids 0..%zu", path, field, key,
                      json_is_integer(val) ? "out of range or repeated" : "that is not an integer", *n - 1);
            free(by_id);
            return NULL;
        }
        by_id[id] = key;
    }
    return by_id;
}

Tokenizer *tokenizer_import_gpt2(const char *encoder_json, const char *vocab_bpe) {
    json_error_t jerr;
    json_t *enc = json_load_file(encoder_json, JSON_REJECT_DUPLICATES, &jerr);
    if (!enc) return gpt_error("%s: not valid JSON (line %d: %s)", encoder_json, jerr.line, jerr.text), NULL;
    SpelledBpe s = {.vocab_path = encoder_json, .vocab_field = "", .merges_path = vocab_bpe, .merges_field = ""};
    Tokenizer *t = NULL;
    size_t len;
    char *text = NULL;
    int cap = 0, *lines = NULL;
    if (!(s.by_id = spellings_by_id(enc, encoder_json, "", &s.n))) goto out;
    if (!(text = (char *)read_file(vocab_bpe, &len))) goto out;
    int lineno = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        line[strcspn(line, "\r")] = '\0';
        if ((lineno == 1 && !strncmp(line, "#version", 8)) || !line[0]) continue;
        char *sp = strchr(line, ' ');
        if (!sp || strchr(sp + 1, ' ')) {
            gpt_error("%s:%d: expected a merge 'LEFT RIGHT' of two tokens of %s", vocab_bpe, lineno, encoder_json);
            goto out;
        }
        *sp = '\0';
        if (s.n_merges == cap) {
            cap = cap ? 2 * cap : 1024;
            s.left = xrealloc(s.left, (size_t)cap * sizeof *s.left);
            s.right = xrealloc(s.right, (size_t)cap * sizeof *s.right);
            lines = xrealloc(lines, (size_t)cap * sizeof *lines);
        }
        s.left[s.n_merges] = line, s.right[s.n_merges] = sp + 1, lines[s.n_merges++] = lineno;
    }
    s.merge_line = lines;
    t = tokenizer_from_spelled(&s);
out:
    free(s.by_id), free(s.left), free(s.right), free(lines), free(text);
    json_decref(enc);
    return t;
}

/* Settings of tokenizer.json that change how text encodes, which must be GPT-2's. */
static int check_hf_pipeline(const char *path, json_t *root, json_t *model) {
    json_t *pre = json_object_get(root, "pre_tokenizer"), *norm = json_object_get(root, "normalizer");
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (norm && !json_is_null(norm))
        return gpt_error("%s: normalizer: expected null (GPT-2's byte-level BPE does not normalise text)", path);
    if (!type || strcmp(type, "ByteLevel"))
        return gpt_error("%s: pre_tokenizer: expected {\"type\": \"ByteLevel\"} (GPT-2's pre-tokenization), got %s",
                         path, type ? type : "none");
    if (json_is_true(json_object_get(pre, "add_prefix_space")))
        return gpt_error("%s: pre_tokenizer.add_prefix_space: expected false (this tool does not add a space)", path);
    if (json_is_false(json_object_get(pre, "use_regex")))
        return gpt_error("%s: pre_tokenizer.use_regex: expected true (GPT-2's pattern)", path);
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype || strcmp(mtype, "BPE"))
        return gpt_error("%s: model.type: expected \"BPE\", got %s", path, mtype ? mtype : "none");
    static const char *const empty_or_null[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *x = json_object_get(model, empty_or_null[i]);
        if (x && !json_is_null(x) && !(json_is_string(x) && !json_string_value(x)[0]))
            return gpt_error("%s: model.%s: expected \"\" or null (a byte-level BPE has none)", path, empty_or_null[i]);
    }
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return gpt_error("%s: model.byte_fallback: expected false", path);
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout))
        return gpt_error("%s: model.dropout: expected null (BPE dropout changes the encoding)", path);
    return 0;
}

Tokenizer *tokenizer_import_hf_json(const char *path) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return gpt_error("%s: not valid JSON (line %d: %s)", path, jerr.line, jerr.text), NULL;
    json_t *model = json_object_get(root, "model"), *merges = json_object_get(model, "merges"),
           *added = json_object_get(root, "added_tokens");
    SpelledBpe s = {.vocab_path = path, .vocab_field = ": model.vocab", .merges_path = path,
                    .merges_field = ": model.merges"};
    Tokenizer *t = NULL;
    char **split = NULL;
    json_t *vocab = NULL;
    if (!json_is_object(root) || !json_is_object(model)) {
        gpt_error("%s: model: expected an object (a tokenizers tokenizer.json)", path);
        goto out;
    }
    if (check_hf_pipeline(path, root, model)) goto out;
    if (!json_is_array(merges)) {
        gpt_error("%s: model.merges: expected an array", path);
        goto out;
    }
    if (added && !json_is_array(added)) {
        gpt_error("%s: added_tokens: expected an array", path);
        goto out;
    }
    /* the vocabulary with the added tokens (which may or may not repeat model.vocab's) */
    vocab = json_deep_copy(json_object_get(model, "vocab"));
    const char **special = xmalloc((json_array_size(added) + 1) * sizeof *special);
    s.special = special;
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *content = json_object_get(a, "content"), *id = json_object_get(a, "id");
        if (!json_is_string(content) || !json_is_integer(id)) {
            gpt_error("%s: added_tokens[%zu]: expected \"id\" and \"content\"", path, i);
            goto out;
        }
        if (!json_is_true(json_object_get(a, "special"))) {
            gpt_error("%s: added_tokens[%zu] ('%s'): expected \"special\": true (added ordinary tokens are not "
                      "supported)", path, i, json_string_value(content));
            goto out;
        }
        json_t *had = json_object_get(vocab, json_string_value(content));
        if (had && !json_equal(had, id)) {
            gpt_error("%s: added_tokens[%zu] ('%s') has id %lld, but model.vocab gives it %lld", path, i,
                      json_string_value(content), (long long)json_integer_value(id),
                      (long long)json_integer_value(had));
            goto out;
        }
        if (json_is_object(vocab)) json_object_set(vocab, json_string_value(content), id);
        special[s.n_special++] = json_string_value(content);
    }
    if (!(s.by_id = spellings_by_id(vocab, path, ": model.vocab", &s.n))) goto out;
    /* merges: "LEFT RIGHT" strings (tokenizers < 0.20) or ["LEFT", "RIGHT"] pairs */
    s.n_merges = (int)json_array_size(merges);
    s.left = xmalloc(((size_t)s.n_merges + 1) * sizeof *s.left);
    s.right = xmalloc(((size_t)s.n_merges + 1) * sizeof *s.right);
    split = xcalloc((size_t)s.n_merges + 1, sizeof *split);
    json_array_foreach(merges, i, a) {
        const char *l = NULL, *r = NULL;
        if (json_is_string(a)) {
            const char *sp = strchr(json_string_value(a), ' ');
            if (sp && !strchr(sp + 1, ' ')) {
                split[i] = xstrdup(json_string_value(a));
                split[i][sp - json_string_value(a)] = '\0';
                l = split[i], r = split[i] + (sp - json_string_value(a)) + 1;
            }
        } else if (json_is_array(a) && json_array_size(a) == 2) {
            l = json_string_value(json_array_get(a, 0)), r = json_string_value(json_array_get(a, 1));
        }
        if (!l || !r) {
            gpt_error("%s: model.merges[%zu]: expected \"LEFT RIGHT\" or [\"LEFT\", \"RIGHT\"]", path, i);
            goto out;
        }
        s.left[i] = l, s.right[i] = r;
    }
    t = tokenizer_from_spelled(&s);
out:
    if (split)
        for (int k = 0; k < s.n_merges; k++) free(split[k]);
    free(split), free(s.left), free(s.right), free(s.by_id), free((void *)s.special);
    json_decref(vocab);
    json_decref(root);
    return t;
}

Tokenizer *tokenizer_import_hf_dir(const char *dir) {
    char json[PATH_MAX], vocab[PATH_MAX], merges[PATH_MAX];
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    if (access(json, R_OK) == 0) return tokenizer_import_hf_json(json);
    if (access(vocab, R_OK) == 0 && access(merges, R_OK) == 0) return tokenizer_import_gpt2(vocab, merges);
    return gpt_error("%s: no tokenizer: expected tokenizer.json, or vocab.json and merges.txt", dir), NULL;
}

/* ---- writing them ---- */

char **tokenizer_spellings(const Tokenizer *t) {
    int n = tokenizer_vocab_size(t), n_tokens = tokenizer_parts(t).n_tokens, table[256];
    byte_to_unicode_table(table);
    size_t len, chars = 0;
    for (int32_t id = 0; id < n; id++) tokenizer_token_bytes(t, id, &len), chars += 2 * len + 1;
    char **s = xmalloc((size_t)n * sizeof *s + chars), *q = (char *)(s + n);
    for (int32_t id = 0; id < n; id++) {
        const uint8_t *p = tokenizer_token_bytes(t, id, &len);
        s[id] = q;
        if (id >= n_tokens) { /* a special token: its name */
            memcpy(q, p, len);
            q += len;
        } else {
            for (size_t i = 0; i < len; i++) {
                int cp = table[p[i]];
                if (cp < 0x80) *q++ = (char)cp;
                else *q++ = (char)(0xC0 | cp >> 6), *q++ = (char)(0x80 | (cp & 0x3F));
            }
        }
        *q++ = '\0';
    }
    return s;
}

char **tokenizer_merge_spellings(const Tokenizer *t, char *const *spellings) {
    TokenizerParts p = tokenizer_parts(t);
    size_t chars = 0;
    for (int k = 0; k < p.n_merges; k++) chars += strlen(spellings[p.merges[k][0]]) + strlen(spellings[p.merges[k][1]]) + 2;
    char **m = xmalloc(((size_t)p.n_merges + 1) * sizeof *m + chars), *q = (char *)(m + p.n_merges + 1);
    for (int k = 0; k < p.n_merges; k++) {
        m[k] = q;
        q += sprintf(q, "%s %s", spellings[p.merges[k][0]], spellings[p.merges[k][1]]) + 1;
    }
    return m;
}

static json_t *vocab_object(const Tokenizer *t, char *const *spellings) {
    json_t *v = json_object();
    for (int32_t id = 0; id < tokenizer_vocab_size(t); id++) json_object_set_new(v, spellings[id], json_integer(id));
    return v;
}

int tokenizer_write_merges_txt(const Tokenizer *t, FILE *f) {
    char **spellings = tokenizer_spellings(t), **merges = tokenizer_merge_spellings(t, spellings);
    int bad = fputs("#version: 0.2\n", f) == EOF;
    for (int k = 0; k < tokenizer_n_merges(t) && !bad; k++) bad = fprintf(f, "%s\n", merges[k]) < 0;
    free(merges);
    free(spellings);
    return bad ? -1 : 0;
}

json_t *tokenizer_hf_json(const Tokenizer *t) {
    TokenizerParts p = tokenizer_parts(t);
    char **spellings = tokenizer_spellings(t), **merge_spellings = tokenizer_merge_spellings(t, spellings);
    json_t *added = json_array(), *merges = json_array();
    for (int k = 0; k < p.n_special; k++)
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", p.special_ids[k],
                                               "content", p.special_names[k], "single_word", 0, "lstrip", 0,
                                               "rstrip", 0, "normalized", 0, "special", 1));
    for (int k = 0; k < p.n_merges; k++) json_array_append_new(merges, json_string(merge_spellings[k]));
    json_t *byte_level = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                   "trim_offsets", 1, "use_regex", 1);
    json_t *j = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:o, s:{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:o, s:o}}",
                          "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
                          "pre_tokenizer", byte_level, "post_processor", json_deep_copy(byte_level), "decoder",
                          json_deep_copy(byte_level), "model", "type", "BPE", "dropout", "unk_token",
                          "continuing_subword_prefix", "", "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback",
                          0, "vocab", vocab_object(t, spellings), "merges", merges);
    free(merge_spellings);
    free(spellings);
    return j;
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
             h5_write_attr_int(f, "format_version", TOKENIZER_FORMAT_VERSION) ||
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
