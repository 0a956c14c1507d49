/* zstream.c: gzip (zlib) and zstd (libzstd) files as byte streams (see zstream.h). */
#include "base/zstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "base/util.h"

enum { IN_BUF = 1 << 17 };

struct ZStream {
    ZsFormat format;
    FILE *f;
    uint8_t *in;
    size_t in_len, in_pos;   /* compressed bytes in `in`, and consumed of them */
    int64_t consumed;        /* compressed bytes consumed before `in` */
    int in_eof;
    int mid_member;          /* inside a gzip member or zstd frame: its end not seen yet */
    int done;
    z_stream gz;
    ZSTD_DStream *zd;
    char err[256];
};

ZsFormat zs_detect(const uint8_t *h, size_t n) {
    if (n >= 2 && h[0] == 0x1f && h[1] == 0x8b) return ZS_GZIP;
    if (n >= 4 && h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd) return ZS_ZSTD;
    return ZS_PLAIN;
}

const char *zs_format_name(ZsFormat f) { return f == ZS_GZIP ? "gzip" : f == ZS_ZSTD ? "zstd" : "plain"; }

ZStream *zs_open(const char *path, ZsFormat format) {
    FILE *f = fopen(path, "rb");
    if (!f) return gpt_error("%s: cannot open: %s", path, strerror(errno)), NULL;
    ZStream *z = xcalloc(1, sizeof *z);
    z->format = format;
    z->f = f;
    z->in = xmalloc(IN_BUF);
    if (format == ZS_GZIP) {
        if (inflateInit2(&z->gz, 15 + 16) != Z_OK) { /* 15 + 16: a gzip header and trailer */
            zs_close(z);
            return gpt_error("%s: cannot start zlib", path), NULL;
        }
    } else if (!(z->zd = ZSTD_createDStream()) || ZSTD_isError(ZSTD_initDStream(z->zd))) {
        zs_close(z);
        return gpt_error("%s: cannot start zstd", path), NULL;
    }
    return z;
}

/* Compressed bytes to decode in z->in (refilled when used up): 1; 0 at the end of a
 * whole stream; -1 on a read error or a file that ends inside a member or frame. */
static int have_input(ZStream *z) {
    if (z->in_pos == z->in_len && !z->in_eof) {
        z->consumed += (int64_t)z->in_len;
        z->in_len = fread(z->in, 1, IN_BUF, z->f);
        z->in_pos = 0;
        if (z->in_len < IN_BUF) {
            if (ferror(z->f)) return snprintf(z->err, sizeof z->err, "read error: %s", strerror(errno)), -1;
            z->in_eof = 1;
        }
    }
    if (z->in_pos < z->in_len) return 1;
    if (z->mid_member)
        return snprintf(z->err, sizeof z->err, "truncated %s stream (it ends inside a %s)", zs_format_name(z->format),
                        z->format == ZS_GZIP ? "member" : "frame"), -1;
    z->done = 1;
    return 0;
}

/* A gzip member may be followed by another; anything else after the last is refused
 * (gzip itself warns of "trailing garbage"). */
static ssize_t read_gzip(ZStream *z, uint8_t *out, size_t n) {
    z->gz.next_out = out;
    z->gz.avail_out = (uInt)(n > (1u << 30) ? 1u << 30 : n);
    while (z->gz.avail_out > 0) {
        int in = have_input(z);
        if (in < 0) return -1;
        if (!in) break;
        z->gz.next_in = z->in + z->in_pos;
        z->gz.avail_in = (uInt)(z->in_len - z->in_pos);
        int rc = inflate(&z->gz, Z_NO_FLUSH);
        z->in_pos = z->in_len - z->gz.avail_in;
        if (rc == Z_STREAM_END) {
            z->mid_member = 0;
            inflateReset(&z->gz);
        } else if (rc == Z_OK || rc == Z_BUF_ERROR) {
            z->mid_member = 1;
        } else {
            return snprintf(z->err, sizeof z->err, "corrupt gzip stream (zlib: %s)",
                            z->gz.msg ? z->gz.msg : "data error"), -1;
        }
    }
    return (ssize_t)((size_t)(z->gz.next_out - out));
}

static ssize_t read_zstd(ZStream *z, uint8_t *out, size_t n) {
    ZSTD_outBuffer ob = {out, n, 0};
    while (ob.pos < ob.size) {
        int in = have_input(z);
        if (in < 0) return -1;
        if (!in) break;
        ZSTD_inBuffer ib = {z->in, z->in_len, z->in_pos};
        size_t rc = ZSTD_decompressStream(z->zd, &ob, &ib);
        z->in_pos = ib.pos;
        if (ZSTD_isError(rc))
            return snprintf(z->err, sizeof z->err, "corrupt zstd stream (zstd: %s)", ZSTD_getErrorName(rc)), -1;
        z->mid_member = rc != 0; /* 0: a frame is complete and flushed */
    }
    return (ssize_t)ob.pos;
}

ssize_t zs_read(ZStream *z, void *buf, size_t n) {
    if (z->done || n == 0) return 0;
    return z->format == ZS_GZIP ? read_gzip(z, buf, n) : read_zstd(z, buf, n);
}

const char *zs_error(const ZStream *z) { return z->err; }

int64_t zs_compressed_pos(const ZStream *z) { return z->consumed + (int64_t)z->in_pos; }

void zs_close(ZStream *z) {
    if (!z) return;
    if (z->format == ZS_GZIP) inflateEnd(&z->gz);
    ZSTD_freeDStream(z->zd);
    if (z->f) fclose(z->f);
    free(z->in);
    free(z);
}
