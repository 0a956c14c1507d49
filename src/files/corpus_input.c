/* corpus_input.c: the inputs of `gpt prepare` as one stream (corpus_parts.h): each
 * opened once, a plain one mapped (mmap) so that a rank reads only its slots and drops
 * their pages after each round, a compressed one left to corpus_scan.c. */
#include "corpus_parts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

/* .jsonl, also under a compression suffix (.jsonl.gz, .jsonl.zst) */
static DocMode doc_mode(const char *path, int paragraphs) {
    size_t len = strlen(path);
    static const char *const suffixes[] = {".gz", ".gzip", ".zst", ".zstd"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t k = strlen(suffixes[i]);
        if (len > k && !strcmp(path + len - k, suffixes[i])) {
            len -= k;
            break;
        }
    }
    return len > 6 && !strncmp(path + len - 6, ".jsonl", 6) ? DOC_JSONL : paragraphs ? DOC_PARAGRAPH : DOC_FILE;
}

int corpus_open_inputs(Stream *s, const char *const *paths, int n, int paragraphs) {
    s->n = n;
    s->in = xcalloc((size_t)n, sizeof *s->in);
    s->offs = xcalloc((size_t)n + 1, sizeof *s->offs);
    for (int i = 0; i < n; i++) {
        Input *in = &s->in[i];
        in->path = paths[i];
        in->mode = doc_mode(paths[i], paragraphs);
        int fd = open(paths[i], O_RDONLY | O_NONBLOCK); /* a FIFO is refused below, not waited on */
        struct stat st;
        if (fd < 0) return gpt_error("%s: cannot open: %s", paths[i], strerror(errno));
        if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
            close(fd);
            return gpt_error("%s: not a regular file (expected a text or .jsonl file)", paths[i]);
        }
        if (st.st_size == 0) {
            close(fd);
            return gpt_error("%s: empty file (expected UTF-8 text)", paths[i]);
        }
        uint8_t head[4];
        ssize_t got = pread(fd, head, sizeof head, 0);
        in->format = zs_detect(head, got > 0 ? (size_t)got : 0);
        in->file_size = st.st_size;
        s->file_bytes += st.st_size;
        if (in->format != ZS_PLAIN) {
            close(fd);
            continue;
        }
        in->size = (size_t)st.st_size;
        void *p = mmap(NULL, in->size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (p == MAP_FAILED) return gpt_error("%s: cannot map: %s", paths[i], strerror(errno));
        in->bom = utf8_bom_len(p, in->size);
        in->buf = (const uint8_t *)p + in->bom;
        in->size -= in->bom;
        if (in->size == 0) return gpt_error("%s: empty file (expected UTF-8 text)", paths[i]);
    }
    return 0;
}

void corpus_close_inputs(Stream *s) {
    for (int i = 0; i < s->n; i++) {
        Input *in = &s->in[i];
        if (in->buf) munmap((void *)(in->buf - in->bom), in->bom + in->size);
        corpus_scanner_free(in->sc);
    }
    free(s->in);
    free(s->offs);
}

void corpus_drop_pages(const Input *in, size_t from, size_t to) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t base = (uintptr_t)(in->buf - in->bom);
    uintptr_t a = ((uintptr_t)in->buf + from) & ~(uintptr_t)(page - 1);
    uintptr_t b = (uintptr_t)in->buf + to;
    if (a < base) a = base;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}
