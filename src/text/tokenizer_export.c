/* tokenizer_export.c: a tokenizer spelled as OpenAI's and Hugging Face's files spell
 * one (tokenizer.h): every token in GPT-2's byte-to-unicode encoding, merges.txt, and
 * tokenizer.json's object. The writing of files is the caller's (interop/hf.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tokenizer_vocab.h"

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
