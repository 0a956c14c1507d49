/* h5util.h: small HDF5 helpers shared by every file format of the tool.
 *
 * HDF5's own error-stack printing is switched off (h5_quiet); each failure becomes one
 * gpt_error() message naming the file and the object ("where"). */
#ifndef GPT_H5UTIL_H
#define GPT_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

void h5_quiet(void);

/* HDF5 1.10 as Debian builds it is not thread-safe: while a background checkpoint
 * (checkpoint_writer.h) writes, every HDF5 call of either thread holds this lock (the writer's
 * chunk by chunk; the training loop's corpus reads, data.c). It is recursive: a
 * caller holding it may call helpers that take it. */
void h5_lock(void);
void h5_unlock(void);

/* HDF5's Fletcher32 checksum of a chunk, bit for bit (H5_checksum_fletcher32, which its
 * filter computes): the sums of each block of 360 words in closed form, vectorised;
 * 9.7 GB/s on a 1 MiB chunk in cache against HDF5's 2.1 (Intel Xeon with AVX-512, one core). */
uint32_t h5_fletcher32(const void *data, size_t bytes);
/* One whole chunk of a chunked dataset whose only filter is Fletcher32, written directly
 * (H5Dwrite_chunk, which bypasses the filter pipeline and its copy of the chunk): the
 * chunk's `bytes` bytes in buf (its full size: an edge chunk padded), to which the
 * checksum is appended as HDF5's filter appends it (buf has room for 4 more bytes), at
 * chunk offset `at`. The file is the same as through the pipeline, verified by every
 * reader. Independent I/O under parallel HDF5: the chunk was allocated at the
 * dataset's creation (early allocation, the parallel default) with exactly this size.
 * Holds h5_lock for the write only (the copy and checksum are the caller's). */
int h5_write_chunk_fletcher32(hid_t d, const hsize_t *at, uint8_t *buf, size_t bytes);

int h5_write_attr_int(hid_t obj, const char *name, int v);
int h5_write_attr_i64(hid_t obj, const char *name, int64_t v);
int h5_write_attr_float(hid_t obj, const char *name, float v);
int h5_write_attr_double(hid_t obj, const char *name, double v);
int h5_write_attr_string(hid_t obj, const char *name, const char *v);
/* A 1-D attribute of n values (for strings: file_type = mem_type = a variable-length
 * string type, v an array of char pointers). */
int h5_write_attr_array(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, hsize_t n,
                        const void *v);

/* Readers: -1 with "PATH: attribute WHERE/NAME is missing / is not ..." on failure. */
int h5_read_attr_int(const char *path, const char *where, hid_t obj, const char *name, int *out);
int h5_read_attr_i64(const char *path, const char *where, hid_t obj, const char *name, int64_t *out);
int h5_read_attr_float(const char *path, const char *where, hid_t obj, const char *name, float *out);
int h5_read_attr_double(const char *path, const char *where, hid_t obj, const char *name, double *out);
int h5_read_attr_string(const char *path, const char *where, hid_t obj, const char *name,
                        char *buf, size_t size);

/* A dataset of `rank` dimensions, `file_type` on disk, from `mem_type` data, chunked by
 * whole rows (shard_chunk_rows: about SHARD_CHUNK_BYTES a chunk) with HDF5's Fletcher32
 * checksum, which every read verifies. */
int h5_write_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                   const hsize_t *dims, const void *data);
/* Upper bounds of what HDF5 (1.10) writes: a dataset of `rows` rows of row_bytes chunked
 * as h5_write_array does (whole chunks, the last one too), and a file's own metadata. */
uint64_t h5_array_bytes(uint64_t rows, uint64_t row_bytes);
#define H5_FILE_OVERHEAD ((uint64_t)1 << 16)

/* A full disk must never meet HDF5: once a write or flush has failed, HDF5 1.10 cannot
 * close the file ("slist already enabled"), and the open ID crashes MPI_Finalize; under
 * parallel HDF5 one rank's failed write also desynchronises the collectives (a hang).
 * So a writer first makes sure that tmp can grow to `bytes`: fallocate reserves the
 * blocks, or where the file system cannot, the free space is checked. HDF5 truncates a
 * file to its data when it creates or closes it, so reserve before H5Fcreate (on a disk
 * full to the last block even closing an empty file fails), again after it, and again
 * before reopening. -1 naming PATH (WHAT: "the checkpoint") with the space needed and free. */
int h5_reserve(const char *path, const char *tmp, uint64_t bytes, const char *what);
/* n strings as a 1-D dataset of fixed-length UTF-8 strings (as wide as the longest):
 * HDF5 cannot checksum variable-length data. */
int h5_write_strings(hid_t loc, const char *name, const char *const *v, hsize_t n);
/* Opens dataset WHERE/NAME and checks its rank; dims receives its shape. */
hid_t h5_open_dataset(const char *path, const char *where, hid_t loc, const char *name,
                      int rank, hsize_t *dims);
/* Reads the whole dataset WHERE/NAME of `rank` dimensions (shape into dims) as mem_type of
 * elem bytes into a new buffer; NULL with a message naming it on a checksum mismatch. */
void *h5_read_all(const char *path, const char *where, hid_t loc, const char *name, int rank,
                  hid_t mem_type, size_t elem, hsize_t *dims);

/* H5Fopen and H5Fcreate (truncating) of the file at path under the file-access list fapl.
 * Every file opened or created through MPI-IO (H5Pset_fapl_mpio) goes through them: a
 * path holding a ':' (runs/2026-12-06T10:00) reaches ROMIO with an explicit "ufs:"
 * prefix, or ROMIO would take the text before the ':' for a file system's name. */
hid_t h5_fopen(const char *path, unsigned flags, hid_t fapl);
hid_t h5_fcreate(const char *path, hid_t fapl);
/* Opens an HDF5 file read-only with the file-access list fapl (H5P_DEFAULT, or MPI-IO's
 * for a collective open). -1 with a message naming PATH: "cannot open" and why if it is
 * missing, unreadable, not a regular file (opening a FIFO would wait for a writer forever)
 * or not HDF5; "corrupted" only if HDF5 opened it and could not read its superblock or
 * root group's metadata (a checksum failure). */
hid_t h5_open_read_fapl(const char *path, hid_t fapl);
hid_t h5_open_read(const char *path); /* the same with H5P_DEFAULT */
/* 1 if path is a regular file in HDF5's format, else 0; never blocks on a FIFO. */
int h5_is_hdf5_file(const char *path);
/* 0 if the root attribute "format" of file f is `expected`; else -1 naming PATH and, when
 * the attribute is absent or different, WHAT the file is not ("a corpus (made by gpt
 * prepare)") and the format found, or, when it cannot be read, that the file's metadata is
 * corrupted. */
int h5_expect_format(const char *path, hid_t f, const char *expected, const char *what);
/* The root attribute "format" into buf ("" if the file has none); -1 naming PATH if it
 * cannot be read (corrupted metadata). */
int h5_read_format(const char *path, hid_t f, char *buf, size_t size);
/* The same, opening and closing the file at path. */
int h5_file_format(const char *path, char *buf, size_t size);

#endif
