/* tokenizer_vocab.h (private to src/text/tokenizer_*.c): what the imports share: a
 * vocabulary under construction, found by its bytes (the imports check for repeats and
 * tiktoken's derives merges by lookup), and GPT-2's byte <-> unicode mapping, in which
 * OpenAI's and Hugging Face's files spell tokens. */
#ifndef GPT_TOKENIZER_VOCAB_H
#define GPT_TOKENIZER_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "base/hashmap.h"
#include "text/tokenizer.h"

/* Tokens in id order: token i is bytes[offsets[i] .. offsets[i + 1]). */
typedef struct {
    uint8_t *bytes;
    int64_t *offsets; /* n + 1 */
    int n, cap;
    size_t nbytes, bytes_cap;
    HashMap by_bytes; /* hash_bytes -> id, colliding entries walked with hm_get_next */
} Vocab;

void vocab_init(Vocab *v);
void vocab_free(Vocab *v);
/* The id of the token of bytes p[0..n), -1 if none. */
int32_t vocab_find(const Vocab *v, const uint8_t *p, size_t n);
/* Appends a token of bytes p[0..n) as id v->n. */
void vocab_add(Vocab *v, const uint8_t *p, size_t n);
size_t vocab_len(const Vocab *v, int32_t id);
/* GPT-2's vocabulary: v's tokens, the merges (left, right, result) and <|endoftext|>
 * after them (NULL with gpt_error() if inconsistent). */
Tokenizer *vocab_finish_gpt2(const Vocab *v, int32_t (*m3)[3], int n_merges);

/* The code point OpenAI uses for byte b: printable Latin-1 bytes stand for themselves,
 * the others are shifted to 256 and up in byte order. */
void byte_to_unicode_table(int table[256]);
/* Decodes an OpenAI token string (UTF-8 of mapped code points) into raw bytes; inverse
 * maps a code point below 512 to its byte or -1. -1 for a code point of no byte. */
int unicode_to_bytes(const char *s, const int inverse[512], uint8_t *out, size_t *n);

#endif
