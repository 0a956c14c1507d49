/* tokenizer.h: byte-level BPE (GPT-2's scheme) with special tokens.
 *
 * Text is split into pieces with GPT-2's pre-tokenization pattern (PCRE2, UTF + UCP,
 * JIT; bytes that are not valid UTF-8 become pieces of their own), then each piece is
 * merged over its bytes: repeatedly, the adjacent pair of tokens with the lowest merge
 * rank becomes one token (leftmost first among equal ranks), until no adjacent pair
 * is a merge. Any byte string therefore encodes, and decoding concatenates the tokens'
 * bytes, so decode(encode(x)) == x for every x, invalid UTF-8 included.
 *
 * Ids: every one of the 256 bytes has a token (its id need not equal the byte: GPT-2's
 * do not); merge i produces one new token; special tokens come last. Special tokens
 * are never produced by merging, and text that spells one is ordinary text unless the
 * caller passes allow_special.
 *
 * tokenizer.c encodes; tokenizer_vocab.c, _import.c, _tiktoken.c and _export.c build
 * tokenizers and spell them as other tools' files do; files/tokenizer_file.h keeps them
 * in HDF5. */
#ifndef GPT_TOKENIZER_H
#define GPT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The special tokens a trained tokenizer has; an imported GPT-2 vocabulary has only
 * <|endoftext|>. */
#define TOK_EOT "<|endoftext|>"
#define TOK_START "<|start|>"
#define TOK_DELIM "<|delim|>"
#define TOK_EXTRACT "<|extract|>"

typedef struct Tokenizer Tokenizer;

/* A growable array of token ids, owned by the caller (free(v->ids)). */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} TokenVec;
void tokvec_push(TokenVec *v, int32_t id);

/* Builds a tokenizer from its parts (all copied):
 *   token_bytes/token_offsets: bytes of token i are token_bytes[offsets[i] .. offsets[i+1]),
 *     for i < n_tokens (the non-special tokens, in id order);
 *   merges: n_merges triples (left id, right id, result id), in rank order;
 *   special names and ids (ids >= n_tokens).
 * Returns NULL with gpt_error() if the parts are inconsistent (a byte without a token,
 * a merge whose result is not the concatenation, duplicate ids, ...). */
Tokenizer *tokenizer_create(const uint8_t *token_bytes, const int64_t *token_offsets,
                            int n_tokens, const int32_t (*merges)[3], int n_merges,
                            const char *const *special_names, const int32_t *special_ids,
                            int n_special);
void tokenizer_free(Tokenizer *t);

int tokenizer_vocab_size(const Tokenizer *t);     /* tokens + special tokens */
int tokenizer_n_merges(const Tokenizer *t);
/* Id of a special token by name, -1 if the tokenizer has none of that name. */
int32_t tokenizer_special_id(const Tokenizer *t, const char *name);

/* Appends the ids of text[0..len) to out. allow_special: spellings of special tokens
 * in the text become those tokens. Returns 0, or -1 (PCRE2 failure) with gpt_error. */
int tokenizer_encode(Tokenizer *t, const uint8_t *text, size_t len, int allow_special,
                     TokenVec *out);
/* The bytes of token `id` (special tokens: their name); NULL if id is out of range. */
const uint8_t *tokenizer_token_bytes(const Tokenizer *t, int32_t id, size_t *len);

/* The parts of a tokenizer, as tokenizer_create() takes them (views, owned by t). */
typedef struct {
    const uint8_t *token_bytes;
    const int64_t *token_offsets;
    int n_tokens;
    const int32_t (*merges)[3];
    int n_merges;
    const char *const *special_names;
    const int32_t *special_ids;
    int n_special;
} TokenizerParts;
TokenizerParts tokenizer_parts(const Tokenizer *t);

/* A fresh byte-level tokenizer from learned merges (token 256+k = merge k), with the
 * four special tokens of TOK_EOT .. TOK_EXTRACT after them. */
Tokenizer *tokenizer_from_merges(const int32_t (*merges)[2], int n_merges);
/* A byte-level BPE from spelled files, tokens in GPT-2's byte-to-unicode encoding:
 * OpenAI's encoder.json + vocab.bpe, which are Hugging Face's vocab.json + merges.txt;
 * or Hugging Face's tokenizer.json (merges as "a b" strings or ["a", "b"] pairs; its
 * normalizer, pre-tokenizer and model settings must be GPT-2's). Tokens that are neither
 * a byte nor a merge's result (or that added_tokens marks special) become special tokens
 * and must have the highest ids. _dir: DIR/tokenizer.json, else DIR/vocab.json and
 * DIR/merges.txt. Errors name the file and the field or line. */
Tokenizer *tokenizer_import_gpt2(const char *encoder_json, const char *vocab_bpe);
Tokenizer *tokenizer_import_hf_json(const char *tokenizer_json);
Tokenizer *tokenizer_import_hf_dir(const char *dir);
/* GPT-2's vocabulary from tiktoken's rank file (base64 token, rank per line;
 * <|endoftext|> is added after the last rank). */
Tokenizer *tokenizer_import_tiktoken(const char *path);

/* The same files written. tokenizer_spellings: every token's spelling in id order
 * (special tokens: their name); tokenizer_merge_spellings: every merge as "LEFT RIGHT"
 * in rank order, from those spellings. Each is an array of NUL-terminated strings that
 * is one allocation with its strings (free() it). merges.txt is "#version: 0.2", then a
 * merge a line; tokenizer.json's object (vocabulary under model.vocab) is a jansson
 * value, the caller's to free. */
char **tokenizer_spellings(const Tokenizer *t);
char **tokenizer_merge_spellings(const Tokenizer *t, char *const *spellings);
int tokenizer_write_merges_txt(const Tokenizer *t, FILE *f);
struct json_t *tokenizer_hf_json(const Tokenizer *t);

/* 1 if a and b encode every text alike (same tokens, merges and special tokens); else
 * 0, with a description of the first difference in why[size]. */
int tokenizer_equal(const Tokenizer *a, const Tokenizer *b, char *why, size_t size);

/* The pre-tokenization step alone, for training: GPT-2's pattern, compiled once. */
typedef struct Pretokenizer Pretokenizer;
Pretokenizer *pretok_create(void);
void pretok_free(Pretokenizer *p);
/* Calls fn(piece, len, ctx) for each piece of text in order; the pieces concatenate
 * to the text. Returns 0, or -1 on a PCRE2 failure. */
int pretok_split(Pretokenizer *p, const uint8_t *text, size_t len,
                 void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx);
/* The pattern, as stored in tokenizer files. */
extern const char *const PRETOK_PATTERN;

#endif
