/* corpus_input.c: the inputs of `gpt prepare` as one stream (corpus_parts.h): each
 * opened once, a plain one mapped (mmap) so that a rank reads only its slots and drops
 * their pages after each round, a compressed one left to corpus_scan.c.
 *
 * A mapped file truncated while prepare runs makes the next read of a page it lost
 * raise SIGBUS. The handler maps zeros over the rest of that input and marks it lost,
 * and the read goes on over the zeros: no jump out of the tokenizer or the JSON parser
 * halfway (leaking or half-updating their state), on whatever thread read it. After
 * each read corpus_input_check reports the change, which its size and time also show
 * when no lost page was touched (the rest of the last page reads as zeros without a
 * signal; a file rewritten in place raises none). */
#include "corpus_parts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
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

/* ---- SIGBUS on a mapped input ---- */

static const Stream *guarded; /* whose mappings the handler serves */
static struct sigaction other_bus;
static uintptr_t page_size;

static void on_sigbus(int sig, siginfo_t *si, void *ctx) {
    (void)sig, (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; guarded && i < guarded->n; i++) {
        Input *in = &guarded->in[i];
        uintptr_t end = (uintptr_t)(in->buf + in->size);
        if (!in->buf || a < (uintptr_t)(in->buf - in->bom) || a >= end) continue;
        uintptr_t from = a & ~(page_size - 1);
        if (mmap((void *)from, end - from, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
            break;
        in->lost = 1;
        return; /* the read is retried and finds zeros */
    }
    /* not ours: the fault repeats under the handler there was before (Open MPI's, the default) */
    sigaction(SIGBUS, &other_bus, NULL);
}

static void guard_inputs(const Stream *s) {
    struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    guarded = s;
    sigaction(SIGBUS, &sa, &other_bus);
}

int corpus_input_check(const Input *in) {
    struct stat st;
    int gone = stat(in->path, &st) != 0;
    if (!in->lost && !gone && st.st_dev == in->dev && st.st_ino == in->ino && st.st_size == in->file_size &&
        st.st_mtim.tv_sec == in->mtime.tv_sec && st.st_mtim.tv_nsec == in->mtime.tv_nsec)
        return 0;
    char now[64];
    if (gone) snprintf(now, sizeof now, "gone");
    else if (st.st_dev != in->dev || st.st_ino != in->ino) snprintf(now, sizeof now, "another file");
    else snprintf(now, sizeof now, "%lld bytes%s", (long long)st.st_size, st.st_size == in->file_size ? " and modified" : "");
    return gpt_error("%s: changed while being read (%lld bytes when prepare opened it, now %s): expected it to stay "
                     "as it is until prepare has read it", in->path, (long long)in->file_size, now);
}

/* ---- opening ---- */

int corpus_open_inputs(Stream *s, const char *const *paths, int n, int paragraphs) {
    s->n = n;
    s->in = xcalloc((size_t)n, sizeof *s->in);
    s->offs = xcalloc((size_t)n + 1, sizeof *s->offs);
    guard_inputs(s);
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
        in->dev = st.st_dev, in->ino = st.st_ino, in->mtime = st.st_mtim;
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
    if (guarded == s) sigaction(SIGBUS, &other_bus, NULL), guarded = NULL;
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
