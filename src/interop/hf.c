/* hf.c: Hugging Face transformers directories, written and read (see hf.h).
 *
 * Names, shapes and configuration keys follow transformers' own source:
 * src/transformers/models/gpt2/{modeling,configuration}_gpt2.py (GPT2LMHeadModel) and
 * src/transformers/models/openai/{modeling,configuration}_openai.py (OpenAIGPTLMHeadModel),
 * with Conv1D from src/transformers/pytorch_utils.py (y = x W + b, W [in, out]). This
 * tool's state-dict names are GPT-2's already; docs/formats.md has the table. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "interop/hf.h"
#include "base/hashmap.h"
#include "base/util.h"
#include "files/tokenizer_file.h"
#include "interop/safetensors.h"
#include "interop/staged.h"
#include "model/config.h"

#define HF_PREFIX "transformer."
#define NAME_MAX_LEN (GPT_TENSOR_NAME_MAX + 32)

/* How transformers stores each of the model's tensors: its name (without HF_PREFIX),
 * GPT-2's but for openai-gpt's embeddings; whether it is a Conv1D matrix, stored
 * transposed as [in, out]; and its shape there. */
typedef struct {
    char name[NAME_MAX_LEN];
    int transposed;
    int64_t shape[2];
} HfTensor;

static HfTensor *hf_layout(const GPT *m) {
    int post = m->cfg.ln == GPT_LN_POST;
    HfTensor *h = xcalloc((size_t)m->n_tensors, sizeof *h);
    for (int k = 0; k < m->n_tensors; k++) {
        const GPTTensor *t = &m->tensors[k];
        if (!strcmp(t->name, "wte")) snprintf(h[k].name, sizeof h[k].name, "%s.weight", post ? "tokens_embed" : "wte");
        else if (!strcmp(t->name, "wpe")) snprintf(h[k].name, sizeof h[k].name, "%s.weight", post ? "positions_embed" : "wpe");
        else snprintf(h[k].name, sizeof h[k].name, "%s", t->name);
        h[k].transposed = t->ndim == 2 && (strstr(t->name, ".attn.") || strstr(t->name, ".mlp."));
        h[k].shape[0] = t->shape[h[k].transposed ? 1 : 0];
        h[k].shape[1] = t->shape[h[k].transposed ? 0 : 1];
    }
    return h;
}

/* dst (cols, rows) = src (rows, cols) transposed, in tiles that stay in the cache. */
static void transpose(float *dst, const float *src, int rows, int cols) {
    enum { TILE = 32 };
    for (int r0 = 0; r0 < rows; r0 += TILE)
        for (int c0 = 0; c0 < cols; c0 += TILE)
            for (int r = r0; r < r0 + TILE && r < rows; r++)
                for (int c = c0; c < c0 + TILE && c < cols; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

/* The largest tensor that is stored transposed: the scratch a conversion needs. */
static size_t transposed_floats(const GPT *m, const HfTensor *h) {
    size_t n = 0;
    for (int k = 0; k < m->n_tensors; k++)
        if (h[k].transposed && m->tensors[k].numel > n) n = m->tensors[k].numel;
    return n;
}

/* ---- export ---- */

/* A float32 value as JSON with the fewest digits that give it back (0.1, not 0.100000001). */
static json_t *json_float(float x) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    return json_real(strtod(buf, NULL));
}
#define JSON_FLAGS (JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15))

static json_t *hf_config(const GPTConfig *c, const Tokenizer *tok) {
    int post = c->ln == GPT_LN_POST, eot = tokenizer_special_id(tok, TOK_EOT);
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", post ? "OpenAIGPTLMHeadModel" : "GPT2LMHeadModel"));
    json_object_set_new(j, "model_type", json_string(post ? "openai-gpt" : "gpt2"));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "n_positions", json_integer(c->n_ctx));
    json_object_set_new(j, "n_embd", json_integer(c->n_embd));
    json_object_set_new(j, "n_layer", json_integer(c->n_layer));
    json_object_set_new(j, "n_head", json_integer(c->n_head));
    json_object_set_new(j, "layer_norm_epsilon", json_float(c->ln_eps));
    json_object_set_new(j, "embd_pdrop", json_float(c->dropout_embd));
    json_object_set_new(j, "resid_pdrop", json_float(c->dropout_resid));
    json_object_set_new(j, "attn_pdrop", json_float(c->dropout_attn));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "tie_word_embeddings", json_true());
    json_object_set_new(j, "torch_dtype", json_string("float32"));
    if (post) { /* openai-gpt's "gelu" is the tanh form (ACT_FNS in modeling_openai.py) */
        json_object_set_new(j, "afn", json_string("gelu"));
    } else {
        json_object_set_new(j, "n_ctx", json_integer(c->n_ctx)); /* legacy, still read by llama.cpp's converter */
        json_object_set_new(j, "n_inner", json_integer(c->n_ffn));
        json_object_set_new(j, "activation_function", json_string("gelu_new"));
        json_object_set_new(j, "scale_attn_weights", json_true());
        json_object_set_new(j, "scale_attn_by_inverse_layer_idx", json_false());
        json_object_set_new(j, "reorder_and_upcast_attn", json_false());
        json_object_set_new(j, "use_cache", json_true());
    }
    json_object_set_new(j, "bos_token_id", eot >= 0 ? json_integer(eot) : json_null());
    json_object_set_new(j, "eos_token_id", eot >= 0 ? json_integer(eot) : json_null());
    return j;
}

/* tokenizer_config.json and special_tokens_map.json: GPT2Tokenizer for both model types,
 * since the tokenizer is GPT-2's byte-level BPE whatever the blocks are. */
static json_t *hf_special_tokens(const Tokenizer *tok, int with_class, int n_ctx) {
    TokenizerParts p = tokenizer_parts(tok);
    json_t *j = json_object(), *extra = json_array();
    if (tokenizer_special_id(tok, TOK_EOT) >= 0)
        for (int k = 0; k < 3; k++) json_object_set_new(j, (const char *[]){"bos_token", "eos_token", "unk_token"}[k], json_string(TOK_EOT));
    for (int k = 0; k < p.n_special; k++)
        if (strcmp(p.special_names[k], TOK_EOT)) json_array_append_new(extra, json_string(p.special_names[k]));
    if (json_array_size(extra)) json_object_set(j, "additional_special_tokens", extra);
    json_decref(extra);
    if (with_class) {
        json_object_set_new(j, "tokenizer_class", json_string("GPT2Tokenizer"));
        json_object_set_new(j, "model_max_length", json_integer(n_ctx));
        json_object_set_new(j, "add_prefix_space", json_false());
        json_object_set_new(j, "clean_up_tokenization_spaces", json_false());
    }
    return j;
}

typedef struct {
    json_t *json;
    size_t flags;
} JsonOut;

static int write_json(FILE *f, const char *path, const void *ctx) {
    const JsonOut *o = ctx;
    if (json_dumpf(o->json, f, o->flags) || fputc('\n', f) == EOF)
        return gpt_error("%s: cannot write: %s", path, strerror(errno));
    return 0;
}

static int write_merges(FILE *f, const char *path, const void *ctx) {
    return tokenizer_write_merges_txt(ctx, f) ? gpt_error("%s: cannot write: %s", path, strerror(errno)) : 0;
}

typedef struct {
    const GPT *m;
    const HfTensor *layout;
    StOut *out;
    char (*names)[NAME_MAX_LEN + 16];
} HfTensors;

static const float *hf_tensor(void *ctx, int i, float *scratch) {
    const HfTensors *h = ctx;
    const GPTTensor *t = &h->m->tensors[i];
    const float *src = h->m->params + t->offset;
    if (!h->layout[i].transposed) return src;
    transpose(scratch, src, t->shape[0], t->shape[1]);
    return scratch;
}

static int write_safetensors(FILE *f, const char *path, const void *ctx) {
    const HfTensors *h = ctx;
    static const char *const meta[][2] = {{"format", "pt"}}; /* transformers refuses a file without it */
    return st_write(f, path, h->out, h->m->n_tensors, meta, 1, hf_tensor, (void *)h,
                    transposed_floats(h->m, h->layout));
}

int hf_export(const char *dir, const GPT *m, const Tokenizer *tok) {
    const GPTConfig *c = &m->cfg;
    if (c->ln == GPT_LN_POST && c->n_ffn != 4 * c->n_embd)
        return gpt_error("n_ffn %d: openai-gpt's MLP is always 4 n_embd = %d wide (its config has no n_inner), so "
                         "this post-LN model has no transformers equivalent", c->n_ffn, 4 * c->n_embd);
    if (tokenizer_vocab_size(tok) > c->vocab_size)
        return gpt_error("the tokenizer's vocabulary (%d) is larger than the model's (%d)", tokenizer_vocab_size(tok),
                         c->vocab_size);
    struct stat sb;
    int created = mkdir(dir, 0777) == 0;
    if (!created && (errno != EEXIST || stat(dir, &sb) || !S_ISDIR(sb.st_mode)))
        return gpt_error("%s: cannot create the directory: %s", dir, errno == EEXIST ? "a file of that name exists" : strerror(errno));
    HfTensor *layout = hf_layout(m);
    HfTensors h = {m, layout, xcalloc((size_t)m->n_tensors, sizeof *h.out),
                   xcalloc((size_t)m->n_tensors, sizeof *h.names)};
    for (int i = 0; i < m->n_tensors; i++) {
        snprintf(h.names[i], sizeof h.names[i], HF_PREFIX "%s", layout[i].name);
        h.out[i] = (StOut){h.names[i], m->tensors[i].ndim, {layout[i].shape[0], layout[i].shape[1]}};
    }
    JsonOut tokjson = {tokenizer_hf_json(tok), JSON_INDENT(2)}, config = {hf_config(c, tok), JSON_FLAGS},
            vocab = {json_incref(json_object_get(json_object_get(tokjson.json, "model"), "vocab")), JSON_COMPACT},
            tokcfg = {hf_special_tokens(tok, 1, c->n_ctx), JSON_FLAGS}, special = {hf_special_tokens(tok, 0, 0), JSON_FLAGS};
    const struct {
        const char *name;
        int (*write)(FILE *, const char *, const void *);
        const void *ctx;
    } files[] = {{"model.safetensors", write_safetensors, &h}, {"config.json", write_json, &config},
                 {"vocab.json", write_json, &vocab},           {"merges.txt", write_merges, tok},
                 {"tokenizer.json", write_json, &tokjson},     {"tokenizer_config.json", write_json, &tokcfg},
                 {"special_tokens_map.json", write_json, &special}};
    Staged s = {0};
    int rc = 0;
    for (size_t k = 0; k < sizeof files / sizeof files[0] && !rc; k++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, files[k].name) >= (int)sizeof path)
            rc = gpt_error("%s: path too long", dir);
        else rc = staged_write(&s, path, files[k].write, files[k].ctx);
    }
    if (rc) staged_abort(&s);
    else rc = staged_commit(&s);
    if (rc && created) rmdir(dir);
    json_decref(config.json), json_decref(vocab.json), json_decref(tokjson.json), json_decref(tokcfg.json),
        json_decref(special.json);
    free(h.out);
    free(h.names);
    free(layout);
    return rc;
}

/* ---- import ---- */

/* An integer key of config.json: required, or dflt when has_default and absent. */
static int cfg_int(const char *path, json_t *j, const char *key, int has_default, int dflt, int *out) {
    json_t *v = json_object_get(j, key);
    if (!v || (json_is_null(v) && has_default)) {
        if (!has_default) return gpt_error("%s: \"%s\" is missing (expected a positive integer)", path, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX)
        return gpt_error("%s: \"%s\": expected a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int cfg_float(const char *path, json_t *j, const char *key, float dflt, float *out) {
    json_t *v = json_object_get(j, key);
    if (!v) return *out = dflt, 0;
    if (!json_is_number(v)) return gpt_error("%s: \"%s\": expected a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

/* A boolean setting that must have one value (or be absent, its default being that). */
static int cfg_must(const char *path, json_t *j, const char *key, int want, const char *why) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v) || json_is_true(v) != want)
        return gpt_error("%s: \"%s\": expected %s (%s)", path, key, want ? "true" : "false", why);
    return 0;
}

static int read_hf_config(const char *path, GPTConfig *c) {
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) return gpt_error("%s: %s (line %d: %s)", path, access(path, R_OK) ? "cannot open" : "not valid JSON",
                             jerr.line, jerr.text);
    int rc = 0;
    const char *type = json_string_value(json_object_get(j, "model_type"));
    memset(c, 0, sizeof *c);
    if (!json_is_object(j)) rc = gpt_error("%s: expected a JSON object", path);
    else if (!type) rc = gpt_error("%s: \"model_type\" is missing (expected \"gpt2\" or \"openai-gpt\")", path);
    else if (strcmp(type, "gpt2") && strcmp(type, "openai-gpt"))
        rc = gpt_error("%s: \"model_type\": expected \"gpt2\" or \"openai-gpt\", got \"%s\"", path, type);
    if (rc) goto out;
    int gpt2 = !strcmp(type, "gpt2");
    c->ln = gpt2 ? GPT_LN_PRE : GPT_LN_POST;
    rc = cfg_int(path, j, "vocab_size", 0, 0, &c->vocab_size) || cfg_int(path, j, "n_positions", 0, 0, &c->n_ctx) ||
         cfg_int(path, j, "n_embd", 0, 0, &c->n_embd) || cfg_int(path, j, "n_layer", 0, 0, &c->n_layer) ||
         cfg_int(path, j, "n_head", 0, 0, &c->n_head) ||
         cfg_float(path, j, "layer_norm_epsilon", 1e-5f, &c->ln_eps) ||
         cfg_float(path, j, "embd_pdrop", 0.1f, &c->dropout_embd) ||
         cfg_float(path, j, "resid_pdrop", 0.1f, &c->dropout_resid) ||
         cfg_float(path, j, "attn_pdrop", 0.1f, &c->dropout_attn) ||
         cfg_must(path, j, "tie_word_embeddings", 1, "this tool's output projection is the token embedding");
    if (rc) goto out;
    c->n_ffn = 4 * c->n_embd;
    if (gpt2) {
        const char *act = json_string_value(json_object_get(j, "activation_function"));
        rc = cfg_int(path, j, "n_inner", 1, 4 * c->n_embd, &c->n_ffn) ||
             cfg_must(path, j, "scale_attn_weights", 1, "attention scaled by 1/sqrt(head size)") ||
             cfg_must(path, j, "scale_attn_by_inverse_layer_idx", 0, "not supported") ||
             cfg_must(path, j, "add_cross_attention", 0, "a decoder-only model has none");
        if (!rc && act && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh"))
            rc = gpt_error("%s: \"activation_function\": expected \"gelu_new\" (the tanh GELU this tool computes), got "
                           "\"%s\"", path, act);
    } else {
        const char *afn = json_string_value(json_object_get(j, "afn"));
        if (afn && strcmp(afn, "gelu"))
            rc = gpt_error("%s: \"afn\": expected \"gelu\" (openai-gpt's tanh GELU, which this tool computes), got "
                           "\"%s\"", path, afn);
    }
    if (!rc && config_validate(c)) {
        char why[512];
        snprintf(why, sizeof why, "%s", gpt_last_error());
        rc = gpt_error("%s: %s", path, why);
    }
out:
    json_decref(j);
    return rc;
}

/* The safetensors file(s) of a directory: model.safetensors, or the shards that
 * model.safetensors.index.json's weight_map names (then kept: tensors are looked up
 * through it, in the shard it names). */
typedef struct {
    int n;
    SafeTensors **files;
    json_t *index;               /* the index's JSON, or NULL */
    json_t *map;                 /* its weight_map */
    char index_path[PATH_MAX];
} Shards;

static void shards_close(Shards *s) {
    for (int i = 0; i < s->n; i++) st_close(s->files[i]);
    free(s->files);
    json_decref(s->index);
}

/* The open file PATH, opened now if it is not yet. */
static SafeTensors *shard_add(Shards *s, const char *path) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->files[i]->path, path)) return s->files[i];
    SafeTensors *f = st_open(path);
    if (!f) return NULL;
    s->files = xrealloc(s->files, (size_t)(s->n + 1) * sizeof *s->files);
    return s->files[s->n++] = f;
}

static int shards_open(const char *dir, Shards *s) {
    char path[PATH_MAX], *index = s->index_path;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(index, sizeof s->index_path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0 || access(index, F_OK)) {
        if (access(path, F_OK)) {
            snprintf(index, sizeof s->index_path, "%s/pytorch_model.bin", dir);
            return gpt_error("%s: no model.safetensors or model.safetensors.index.json%s", dir,
                             access(index, F_OK) ? "" : " (pytorch_model.bin, a pickle, is not read: save the model "
                                                        "with safe_serialization=True)");
        }
        return shard_add(s, path) ? 0 : -1;
    }
    json_error_t jerr;
    s->index = json_load_file(index, JSON_REJECT_DUPLICATES, &jerr); /* a key twice: two shards */
    s->map = json_object_get(s->index, "weight_map");
    if (!s->index) return gpt_error("%s: not valid JSON (line %d: %s)", index, jerr.line, jerr.text);
    if (!json_is_object(s->map)) return gpt_error("%s: \"weight_map\": expected an object of tensor -> file", index);
    const char *key;
    json_t *v;
    json_object_foreach(s->map, key, v) {
        const char *file = json_string_value(v);
        if (!file || strchr(file, '/'))
            return gpt_error("%s: weight_map.%s: expected a file name in %s", index, key, dir);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        const SafeTensors *f = shard_add(s, path);
        if (!f) return -1;
        if (!st_find(f, key)) /* an entry the import would otherwise pass over */
            return gpt_error("%s: weight_map.%s names %s, which has no tensor '%s'", index, key, path, key);
    }
    if (s->n == 0) return gpt_error("%s: \"weight_map\" names no file", index);
    return 0;
}

/* The tensor NAME, with or without HF_PREFIX, and the file holding it: the shard the
 * index names for it, or the one file. NULL if absent (after check_unambiguous there is
 * at most one). */
static const StTensor *shards_find(const Shards *s, const char *name, const SafeTensors **in) {
    char prefixed[NAME_MAX_LEN + 16];
    snprintf(prefixed, sizeof prefixed, HF_PREFIX "%s", name);
    const char *keys[2] = {prefixed, name};
    for (int k = 0; k < 2; k++) {
        const SafeTensors *f = s->files[0];
        if (s->map) {
            const char *file = json_string_value(json_object_get(s->map, keys[k]));
            if (!file) continue;
            for (int i = 0; i < s->n; i++) {
                const char *base = strrchr(s->files[i]->path, '/');
                if (!strcmp(base ? base + 1 : s->files[i]->path, file)) f = s->files[i];
            }
        }
        const StTensor *t = st_find(f, keys[k]);
        if (t) return *in = f, t;
    }
    return NULL;
}

static const char *unprefixed(const char *name) {
    return strncmp(name, HF_PREFIX, strlen(HF_PREFIX)) ? name : name + strlen(HF_PREFIX);
}

/* No tensor is stored twice, with and without HF_PREFIX or in two shards: which copy
 * to take would be a guess. With an index, every tensor of a shard is one it lists
 * there, so none is passed over unread. */
static int check_unambiguous(const Shards *s) {
    HashMap seen;
    hm_init(&seen, 64);
    int rc = 0;
    for (int f = 0; f < s->n && !rc; f++)
        for (int i = 0; i < s->files[f]->n && !rc; i++) {
            const char *full = s->files[f]->tensors[i].name, *name = unprefixed(full);
            if (s->map && !json_is_string(json_object_get(s->map, full))) {
                rc = gpt_error("%s: tensor '%s' is not in %s's weight_map", s->files[f]->path, full, s->index_path);
                break;
            }
            uint64_t h = hash_bytes((const uint8_t *)name, strlen(name));
            for (int64_t *v = hm_get(&seen, h); v && !rc; v = hm_get_next(&seen, h, v)) {
                const SafeTensors *g = s->files[*v >> 32];
                const char *other = g->tensors[*v & 0xffffffff].name;
                if (!strcmp(unprefixed(other), name))
                    rc = gpt_error("tensor '%s' is stored twice: as '%s' in %s and as '%s' in %s", name, other,
                                   g->path, full, s->files[f]->path);
            }
            hm_put_dup(&seen, h, (int64_t)f << 32 | i);
        }
    hm_free(&seen);
    return rc;
}

static int is_ignored(const char *name) {
    size_t n = strlen(name);
    return (n >= 10 && !strcmp(name + n - 10, ".attn.bias")) ||
           (n >= 17 && !strcmp(name + n - 17, ".attn.masked_bias"));
}

/* Every tensor of the files is one of the model's, a mask buffer, or the tied lm_head. */
static int check_no_strays(const Shards *s, const GPT *m, const HfTensor *layout) {
    for (int f = 0; f < s->n; f++)
        for (int i = 0; i < s->files[f]->n; i++) {
            const char *name = unprefixed(s->files[f]->tensors[i].name);
            if (is_ignored(name) || !strcmp(name, "lm_head.weight")) continue;
            int known = 0;
            for (int k = 0; k < m->n_tensors && !known; k++) known = !strcmp(layout[k].name, name);
            if (!known)
                return gpt_error("%s: tensor '%s' is not part of a %s model (config.json: n_layer %d)",
                                 s->files[f]->path, s->files[f]->tensors[i].name,
                                 m->cfg.ln == GPT_LN_PRE ? "gpt2" : "openai-gpt", m->cfg.n_layer);
        }
    return 0;
}

static int read_tensors(const Shards *s, GPT *m, const HfTensor *layout) {
    const GPTConfig *c = &m->cfg;
    float *buf = xmalloc((transposed_floats(m, layout) + 1) * sizeof *buf);
    int rc = 0;
    for (int k = 0; k < m->n_tensors && !rc; k++) {
        const GPTTensor *t = &m->tensors[k];
        const char *name = layout[k].name;
        const SafeTensors *file = NULL;
        const StTensor *st = shards_find(s, name, &file);
        int tr = layout[k].transposed;
        const int64_t *want = layout[k].shape;
        if (!st) {
            rc = gpt_error("%s: tensor '" HF_PREFIX "%s' is missing (config.json: n_layer %d, %s)",
                           s->map ? s->index_path : s->files[0]->path, name, c->n_layer,
                           c->ln == GPT_LN_PRE ? "gpt2" : "openai-gpt");
            break;
        }
        if (st->ndim != t->ndim || st->shape[0] != want[0] || (t->ndim == 2 && st->shape[1] != want[1])) {
            char got[64] = "", exp[64];
            for (int d = 0; d < st->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)st->shape[d]);
            if (t->ndim == 2) snprintf(exp, sizeof exp, "%lld, %lld", (long long)want[0], (long long)want[1]);
            else snprintf(exp, sizeof exp, "%lld", (long long)want[0]);
            rc = gpt_error("%s: tensor '%s' has shape [%s], but config.json gives [%s]", file->path, st->name, got,
                           exp);
            break;
        }
        float *dst = m->params + t->offset;
        if (!tr) rc = st_read_f32(file, st, dst);
        else if (!(rc = st_read_f32(file, st, buf))) transpose(dst, buf, t->shape[1], t->shape[0]);
    }
    /* a stored lm_head must be the embeddings themselves: the output is tied */
    const SafeTensors *file = NULL;
    const StTensor *head = rc ? NULL : shards_find(s, "lm_head.weight", &file);
    free(buf);
    if (head) {
        if (head->ndim != 2 || head->shape[0] != c->vocab_size || head->shape[1] != c->n_embd) {
            rc = gpt_error("%s: lm_head.weight has another shape than the token embeddings", file->path);
        } else {
            float *lm = xmalloc((size_t)st_numel(head) * sizeof *lm);
            if (!(rc = st_read_f32(file, head, lm)) && memcmp(lm, m->w.wte, (size_t)st_numel(head) * sizeof *lm))
                rc = gpt_error("%s: lm_head.weight differs from the token embeddings; this tool ties its output "
                               "projection to them (tie_word_embeddings)", file->path);
            free(lm);
        }
    }
    const GPTTensor *bad = rc ? NULL : tensors_first_nonfinite(m->tensors, m->n_tensors, m->params);
    if (bad) rc = gpt_error("%s: tensor '%s' holds a NaN or an infinity", s->files[0]->path, bad->name);
    return rc;
}

/* openai-gpt's own tokenizer is a lower-casing BPE with "</w>" word ends, not GPT-2's. */
static Tokenizer *import_tokenizer(const char *dir) {
    Tokenizer *t = tokenizer_import_hf_dir(dir);
    if (t) return t;
    char path[PATH_MAX], why[1024];
    size_t len;
    snprintf(why, sizeof why, "%s", gpt_last_error());
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    uint8_t *text = access(path, R_OK) ? NULL : read_file(path, &len);
    int word_ends = text && strstr((const char *)text, "</w>");
    free(text);
    return gpt_error("%s%s; pass --tokenizer TOK.h5 to import the model with another tokenizer", why,
                     word_ends ? " (this is openai-gpt's own word-level BPE with </w> word ends, not GPT-2's "
                                 "byte-level BPE)" : ""),
           NULL;
}

GPT *hf_import(const char *dir, const char *tok_path, Tokenizer **tok) {
    char path[PATH_MAX];
    GPTConfig cfg;
    *tok = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (read_hf_config(path, &cfg)) return NULL;
    Shards s = {0};
    GPT *m = NULL;
    HfTensor *layout = NULL;
    if (shards_open(dir, &s) || check_unambiguous(&s)) goto fail;
    m = gpt_create(&cfg, 0, 0); /* parameters only */
    layout = hf_layout(m);
    if (read_tensors(&s, m, layout) || check_no_strays(&s, m, layout)) goto fail;
    if (!(*tok = tok_path ? tokenizer_load(tok_path) : import_tokenizer(dir))) goto fail;
    if (tokenizer_vocab_size(*tok) > cfg.vocab_size) {
        gpt_error("%s: the tokenizer's vocabulary (%d) is larger than config.json's vocab_size %d",
                  tok_path ? tok_path : dir, tokenizer_vocab_size(*tok), cfg.vocab_size);
        goto fail;
    }
    shards_close(&s);
    free(layout);
    return m;
fail:
    shards_close(&s);
    free(layout);
    gpt_free(m);
    tokenizer_free(*tok);
    *tok = NULL;
    return NULL;
}
