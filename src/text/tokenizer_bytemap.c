/* tokenizer_bytemap.c: GPT-2's byte <-> unicode mapping (tokenizer_vocab.h), in which
 * OpenAI's encoder.json and vocab.bpe and Hugging Face's files spell a token's bytes as
 * printable characters. */
#include "tokenizer_vocab.h"

/* The code point OpenAI uses for byte b: printable Latin-1 bytes stand for themselves,
 * the others are shifted to 256 and up in byte order. */
void byte_to_unicode_table(int table[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        table[b] = printable ? b : 256 + n++;
    }
}

/* Decodes an OpenAI token string (UTF-8 of mapped code points) into raw bytes. */
int unicode_to_bytes(const char *s, const int inverse[512], uint8_t *out, size_t *n) {
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
