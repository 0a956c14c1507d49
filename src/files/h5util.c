/* h5util.c: attribute and dataset helpers over the HDF5 C API (see h5util.h). */
#define _GNU_SOURCE /* fallocate */
#include "files/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/util.h"
#include "dist/dist.h"
#include "model/shard.h"

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static pthread_mutex_t h5_mutex = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP; /* the writer nests it */
void h5_lock(void) { pthread_mutex_lock(&h5_mutex); }
void h5_unlock(void) { pthread_mutex_unlock(&h5_mutex); }

/* ---- Fletcher32 ---- */

/* HDF5's sums run word by word: sum1 += w; sum2 += sum1, in uint32, folded every 360
 * words. Over a block of k words that is sum2 += k sum1 + sum_j (k - j) w_j and sum1 +=
 * sum_j w_j, the same modulo 2^32 (uint32 arithmetic wraps alike). For k = 8 G, word j =
 * 8 g + l has weight 8 (G - g) - l: eight lanes of running sums A_l += w, B_l += A_l give
 * sum_j (k - j) w_j = sum_l (8 B_l - l A_l): one AVX2 vector of lanes (the binary needs
 * x86-64-v3), no chain from word to word. */
static void fletcher32_block(const uint8_t *p, uint32_t k, uint32_t *sum1, uint32_t *sum2) {
    uint32_t a = 0, b = 0;
    if (k % 8 == 0) {
        const __m128i swap = _mm_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
        __m256i A = _mm256_setzero_si256(), B = _mm256_setzero_si256();
        for (uint32_t g = 0; g < k / 8; g++) {
            __m128i be = _mm_loadu_si128((const __m128i *)(p + 16 * (size_t)g));
            A = _mm256_add_epi32(A, _mm256_cvtepu16_epi32(_mm_shuffle_epi8(be, swap)));
            B = _mm256_add_epi32(B, A);
        }
        uint32_t la[8], lb[8];
        _mm256_storeu_si256((__m256i *)la, A);
        _mm256_storeu_si256((__m256i *)lb, B);
        for (int l = 0; l < 8; l++) a += la[l], b += 8 * lb[l] - (uint32_t)l * la[l];
    } else {
        for (uint32_t j = 0; j < k; j++) {
            uint16_t be;
            memcpy(&be, p + 2 * (size_t)j, 2);
            a += __builtin_bswap16(be);
            b += (k - j) * __builtin_bswap16(be);
        }
    }
    *sum2 += k * *sum1 + b;
    *sum1 += a;
}

static uint32_t fold16(uint32_t x) { return (x & 0xffff) + (x >> 16); }

uint32_t h5_fletcher32(const void *data, size_t bytes) {
    const uint8_t *p = data;
    uint32_t sum1 = 0, sum2 = 0;
    for (size_t words = bytes / 2; words;) {
        uint32_t k = words > 360 ? 360 : (uint32_t)words;
        fletcher32_block(p, k, &sum1, &sum2);
        p += 2 * (size_t)k, words -= k;
        sum1 = fold16(sum1), sum2 = fold16(sum2);
    }
    if (bytes % 2) {
        sum1 += (uint32_t)*p << 8;
        sum2 += sum1;
        sum1 = fold16(sum1), sum2 = fold16(sum2);
    }
    sum1 = fold16(sum1), sum2 = fold16(sum2);
    return sum2 << 16 | sum1;
}

int h5_write_chunk_fletcher32(hid_t d, const hsize_t *at, uint8_t *buf, size_t bytes) {
    uint32_t sum = h5_fletcher32(buf, bytes);
    for (int i = 0; i < 4; i++) buf[bytes + (size_t)i] = (uint8_t)(sum >> (8 * i)); /* little-endian, as HDF5 */
    h5_lock();
    herr_t rc = H5Dwrite_chunk(d, H5P_DEFAULT, 0, at, bytes + 4, buf);
    h5_unlock();
    return rc < 0 ? -1 : 0;
}

/* The innermost message of HDF5's error stack, which says what failed ("incorrect
 * metadata checksum after all read attempts"), and the function that raised it. */
typedef struct {
    char desc[256], func[64];
} H5Cause;

static herr_t keep_desc(unsigned n, const H5E_error2_t *e, void *out) {
    (void)n;
    H5Cause *c = out;
    snprintf(c->desc, sizeof c->desc, "%s", e->desc);
    snprintf(c->func, sizeof c->func, "%s", e->func_name ? e->func_name : "");
    return 0;
}

static H5Cause h5_cause(void) {
    H5Cause c = {"", ""};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_desc, &c);
    return c;
}

/* -1 naming PATH and what failed (the format) when HDF5 could not read the file, with the
 * cause from its error stack. */
static int __attribute__((format(printf, 2, 3))) corrupted(const char *path, const char *fmt, ...) {
    char what[256];
    H5Cause c = h5_cause();
    const char *cause = c.desc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return gpt_error("%s: %s (HDF5: %s): the file is corrupted", path, what,
                     cause[0] ? cause : "no details");
}

static int write_attr_in(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, hid_t space,
                         const void *value) {
    hid_t a = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mem_type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

static int write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *value) {
    return write_attr_in(obj, name, file_type, mem_type, H5Screate(H5S_SCALAR), value);
}

int h5_write_attr_array(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, hsize_t n,
                        const void *v) {
    return write_attr_in(obj, name, file_type, mem_type, H5Screate_simple(1, &n, NULL), v);
}

int h5_write_attr_int(hid_t obj, const char *name, int v) {
    return write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v);
}

int h5_write_attr_i64(hid_t obj, const char *name, int64_t v) {
    return write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

int h5_write_attr_float(hid_t obj, const char *name, float v) {
    return write_attr(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &v);
}

int h5_write_attr_double(hid_t obj, const char *name, double v) {
    return write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

int h5_write_attr_string(hid_t obj, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = write_attr(obj, name, t, t, &v);
    H5Tclose(t);
    return rc;
}

/* Opens an attribute of the expected class; -1 with a message naming it otherwise. */
static hid_t open_attr(const char *path, const char *where, hid_t obj, const char *name,
                       H5T_class_t cls, const char *expected) {
    htri_t has = H5Aexists(obj, name);
    if (has < 0) return corrupted(path, "cannot read the attributes of %s", *where ? where : "/");
    if (!has) return gpt_error("%s: attribute %s/%s is missing (expected %s)", path, where, name, expected);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    hid_t s = H5Aget_space(a);
    int ok = H5Tget_class(t) == cls && H5Sget_simple_extent_npoints(s) == 1;
    H5Tclose(t);
    H5Sclose(s);
    if (!ok) {
        H5Aclose(a);
        return gpt_error("%s: attribute %s/%s is not %s", path, where, name, expected);
    }
    return a;
}

static int read_attr_scalar(const char *path, const char *where, hid_t obj, const char *name,
                            H5T_class_t cls, hid_t mem_type, const char *expected, void *out) {
    hid_t a = open_attr(path, where, obj, name, cls, expected);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, mem_type, out);
    if (rc < 0) corrupted(path, "cannot read attribute %s/%s", where, name);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

int h5_read_attr_int(const char *path, const char *where, hid_t obj, const char *name, int *out) {
    return read_attr_scalar(path, where, obj, name, H5T_INTEGER, H5T_NATIVE_INT, "a single integer", out);
}

int h5_read_attr_i64(const char *path, const char *where, hid_t obj, const char *name, int64_t *out) {
    return read_attr_scalar(path, where, obj, name, H5T_INTEGER, H5T_NATIVE_INT64, "a single integer", out);
}

int h5_read_attr_float(const char *path, const char *where, hid_t obj, const char *name, float *out) {
    return read_attr_scalar(path, where, obj, name, H5T_FLOAT, H5T_NATIVE_FLOAT, "a single number", out);
}

int h5_read_attr_double(const char *path, const char *where, hid_t obj, const char *name, double *out) {
    return read_attr_scalar(path, where, obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, "a single number", out);
}

int h5_read_attr_string(const char *path, const char *where, hid_t obj, const char *name,
                        char *buf, size_t size) {
    hid_t a = open_attr(path, where, obj, name, H5T_STRING, "a string");
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    hid_t mt = H5Tcopy(ft); /* same character set: HDF5 does not convert between them */
    herr_t rc;
    if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        rc = H5Aread(a, mt, &s);
        if (rc >= 0 && s) snprintf(buf, size, "%s", s);
        if (s) H5free_memory(s);
    } else {
        H5Tset_size(mt, size);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        rc = H5Aread(a, mt, buf);
        buf[size - 1] = '\0';
    }
    if (rc < 0) corrupted(path, "cannot read attribute %s/%s", where, name);
    H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

/* Bytes HDF5 takes beyond the data, generously (measured in 1.10: about 2.8 KiB a
 * dataset with its share of the group, 40 a chunk). */
enum { DATASET_OVERHEAD = 4096, CHUNK_OVERHEAD = 128 };

uint64_t h5_array_bytes(uint64_t rows, uint64_t row_bytes) {
    uint64_t step = rows ? shard_chunk_rows(rows, row_bytes) : 1, chunks = (rows + step - 1) / step;
    return chunks * (step * row_bytes + CHUNK_OVERHEAD) + DATASET_OVERHEAD;
}

static double mib(double bytes) { return bytes / (1 << 20); }

int h5_reserve(const char *path, const char *tmp, uint64_t bytes, const char *what) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return gpt_error("%s: cannot create the file: %s", tmp, strerror(errno));
    struct statvfs v;
    struct stat st;
    double avail = (double)bytes; /* unknown: assumed enough */
    if (!fstatvfs(fd, &v) && !fstat(fd, &st)) /* what tmp already holds counts */
        avail = (double)v.f_bavail * (double)v.f_frsize + 512.0 * (double)st.st_blocks;
    int err = fallocate(fd, 0, 0, (off_t)bytes) ? errno : 0;
    if (err == EOPNOTSUPP) err = avail < (double)bytes ? ENOSPC : 0;
    close(fd);
    return err ? gpt_error("%s: cannot reserve the %.1f MiB %s needs (%.1f MiB free): %s", path, mib((double)bytes),
                           what, mib(avail), strerror(err))
               : 0;
}

int h5_write_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                   const hsize_t *dims, const void *data) {
    hid_t space = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[8], row = 1, n = 1;
    for (int i = 0; i < rank && i < 8; i++) chunk[i] = dims[i], n *= dims[i];
    for (int i = 1; i < rank && i < 8; i++) row *= dims[i];
    /* HDF5 checksums chunked datasets only, neither an empty chunk nor variable-length data */
    if (n > 0 && rank <= 8 && H5Tis_variable_str(file_type) <= 0) {
        chunk[0] = shard_chunk_rows(dims[0], row * H5Tget_size(file_type));
        H5Pset_chunk(dcpl, rank, chunk);
        H5Pset_fletcher32(dcpl);
    }
    hid_t d = H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

int h5_write_strings(hid_t loc, const char *name, const char *const *v, hsize_t n) {
    size_t width = 1;
    for (hsize_t i = 0; i < n; i++)
        if (strlen(v[i]) + 1 > width) width = strlen(v[i]) + 1;
    char *buf = xcalloc((size_t)n + 1, width);
    for (hsize_t i = 0; i < n; i++) memcpy(buf + i * width, v[i], strlen(v[i]));
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, width);
    H5Tset_strpad(str, H5T_STR_NULLTERM);
    H5Tset_cset(str, H5T_CSET_UTF8);
    int rc = h5_write_array(loc, name, str, str, 1, &n, buf);
    H5Tclose(str);
    free(buf);
    return rc;
}

hid_t h5_open_dataset(const char *path, const char *where, hid_t loc, const char *name,
                      int rank, hsize_t *dims) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return gpt_error("%s: dataset %s/%s is missing", path, where, name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return gpt_error("%s: %s/%s is not a dataset", path, where, name);
    hid_t s = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd == rank) H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    if (nd != rank) {
        H5Dclose(d);
        return gpt_error("%s: dataset %s/%s has %d dimensions, expected %d", path, where, name, nd, rank);
    }
    return d;
}

void *h5_read_all(const char *path, const char *where, hid_t loc, const char *name, int rank,
                  hid_t mem_type, size_t elem, hsize_t *dims) {
    hid_t d = h5_open_dataset(path, where, loc, name, rank, dims);
    if (d < 0) return NULL;
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    void *buf = xmalloc(n * elem + 1);
    if (H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        gpt_error("%s: cannot read %s/%s (wrong type or corrupted)", path, where, name);
        free(buf);
        buf = NULL;
    }
    H5Dclose(d);
    return buf;
}

int h5_is_hdf5_file(const char *path) {
    struct stat st;
    h5_quiet();
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && H5Fis_hdf5(path) > 0;
}

/* The name HDF5 hands its file driver for path. ROMIO reads the text before a ':' as a
 * file-system prefix ("nfs:", "lustre:") and fails on one it does not know, so a path with
 * a ':' gets the explicit "ufs:", which ROMIO strips, using the rest verbatim. OMPIO takes
 * every name verbatim (it would keep the prefix), and the other drivers are not MPI-IO. */
static char *driver_name(const char *path, hid_t fapl) {
    int prefix = strchr(path, ':') && fapl != H5P_DEFAULT && H5Pget_driver(fapl) == H5FD_MPIO &&
                 dist_mpiio_is_romio();
    size_t n = strlen(path) + 5;
    char *name = xmalloc(n);
    snprintf(name, n, "%s%s", prefix ? "ufs:" : "", path);
    return name;
}

hid_t h5_fopen(const char *path, unsigned flags, hid_t fapl) {
    char *name = driver_name(path, fapl);
    hid_t f = H5Fopen(name, flags, fapl);
    free(name);
    return f;
}

hid_t h5_fcreate(const char *path, hid_t fapl) {
    char *name = driver_name(path, fapl);
    hid_t f = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    free(name);
    return f;
}

hid_t h5_open_read_fapl(const char *path, hid_t fapl) {
    struct stat st;
    if (stat(path, &st)) return gpt_error("%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return gpt_error("%s: cannot open: not a regular file (expected an HDF5 file)", path);
    /* what cannot be opened is said so, never called corrupted */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return gpt_error("%s: cannot open: %s", path, strerror(errno));
    close(fd);
    h5_quiet();
    htri_t is_hdf5 = H5Fis_hdf5(path);
    if (is_hdf5 == 0) return gpt_error("%s: cannot open: not an HDF5 file", path);
    if (is_hdf5 < 0) return gpt_error("%s: cannot open (HDF5: %s)", path, h5_cause().desc);
    hid_t f = h5_fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) {
        H5Cause c = h5_cause(); /* the file driver's own open (H5FD_sec2_open, H5FD_mpio_open) */
        if (!strncmp(c.func, "H5FD_", 5) && strstr(c.func, "_open"))
            return gpt_error("%s: cannot open (HDF5: %s)", path, c.desc);
        return corrupted(path, "cannot open as HDF5");
    }
    /* opening reads only the superblock: a damaged root group would otherwise look empty */
    H5O_info_t info;
    if (H5Oget_info2(f, &info, H5O_INFO_NUM_ATTRS) < 0) {
        corrupted(path, "cannot read the root group's metadata");
        H5Fclose(f);
        return -1;
    }
    return f;
}

hid_t h5_open_read(const char *path) { return h5_open_read_fapl(path, H5P_DEFAULT); }

int h5_read_format(const char *path, hid_t f, char *buf, size_t size) {
    buf[0] = '\0';
    htri_t has = H5Aexists(f, "format");
    if (has < 0) return corrupted(path, "cannot read the attributes of /");
    return has ? h5_read_attr_string(path, "", f, "format", buf, size) : 0;
}

int h5_file_format(const char *path, char *buf, size_t size) {
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    int rc = h5_read_format(path, f, buf, size);
    H5Fclose(f);
    return rc;
}

int h5_expect_format(const char *path, hid_t f, const char *expected, const char *what) {
    char format[64];
    if (h5_read_format(path, f, format, sizeof format)) return -1;
    if (!format[0]) return gpt_error("%s: not %s: it has no format attribute (expected '%s')", path, what, expected);
    if (strcmp(format, expected))
        return gpt_error("%s: not %s: its format is '%s' (expected '%s')", path, what, format, expected);
    return 0;
}
