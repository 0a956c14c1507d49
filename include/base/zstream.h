/* zstream.h: reading a gzip or zstd compressed file as one sequential byte stream.
 *
 * The format is told by the file's first bytes (gzip 1f 8b, zstd 28 b5 2f fd), not its
 * name. Concatenated members (gzip) and frames (zstd) are read one after the other, as
 * `zcat` and `zstdcat` do. A stream that ends inside a member or frame is an error
 * (truncated), as is one whose data or checksum is wrong (corrupt): such input is
 * never passed on as if it were whole. */
#ifndef GPT_ZSTREAM_H
#define GPT_ZSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum { ZS_PLAIN, ZS_GZIP, ZS_ZSTD } ZsFormat;

/* The format of a file from its first bytes (ZS_PLAIN for anything else). */
ZsFormat zs_detect(const uint8_t *head, size_t n);
const char *zs_format_name(ZsFormat f);

typedef struct ZStream ZStream;

/* Opens a compressed file (format gzip or zstd); NULL with gpt_error() naming the file. */
ZStream *zs_open(const char *path, ZsFormat format);
/* Up to n decompressed bytes into buf: the count, 0 at the end of the stream, or -1
 * with a description of what is wrong in zs_error() (the caller knows the line). */
ssize_t zs_read(ZStream *z, void *buf, size_t n);
const char *zs_error(const ZStream *z);
/* Compressed bytes consumed so far (for progress against the file's size). */
int64_t zs_compressed_pos(const ZStream *z);
void zs_close(ZStream *z);

#endif
