/* tokenizer_import.c: GPT-2-style vocabularies from OpenAI's and Hugging Face's files
 * (tokenizer.h): encoder.json + vocab.bpe (vocab.json + merges.txt) and tokenizer.json.
 *
 * The files spell tokens in GPT-2's byte-to-unicode encoding and list the merges by
 * spelling, in rank order; the import turns both back into bytes and ids and checks that
 * every merge's result is a token, since encoding follows the merges. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "tokenizer_vocab.h"

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

