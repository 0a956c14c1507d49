/* test_h5util.c: chunks written directly with our Fletcher32 (h5_write_chunk_fletcher32)
 * against HDF5's own filter. HDF5's filter pipeline writes each buffer as a one-chunk
 * dataset; the stored chunk (read raw with H5Dread_chunk) must end in h5_fletcher32 of
 * the data. The same buffer written directly must be stored byte for byte alike, read
 * back verified by HDF5, and a changed byte must be a read error. The buffers: random
 * bytes, all 0xff (the largest sums, where HDF5's uint32 sums wrap), all zeros, and odd
 * lengths. */
#include <hdf5.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/rng.h"
#include "base/util.h"
#include "files/h5util.h"

enum { N_CASES = 7 };
static const size_t sizes[N_CASES] = {1 << 20, 720 * 1000, 720 * 1000, 1 << 16, 1, 723, 2 * 359 + 1};

static uint8_t *case_data(int c) {
    uint8_t *d = xmalloc(sizes[c]);
    Rng r;
    rng_seed(&r, 11 + (uint64_t)c);
    for (size_t i = 0; i < sizes[c]; i++) d[i] = c == 1 ? 0xff : c == 2 ? 0 : (uint8_t)(rng_next(&r) >> 24);
    return d;
}

/* Writes the buffer as a one-chunk, checksummed byte dataset, through HDF5's filter or
 * directly; returns the stored chunk (data and checksum, malloc'ed) with its size. */
static uint8_t *stored_chunk(const char *path, const uint8_t *data, size_t n, int direct, size_t *stored) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims = n;
    hid_t space = H5Screate_simple(1, &dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &dims);
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(f, "x", H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    hsize_t at = 0, size = 0;
    if (direct) {
        uint8_t *buf = xmalloc(n + 4);
        memcpy(buf, data, n);
        assert_int_equal(h5_write_chunk_fletcher32(d, &at, buf, n), 0);
        free(buf);
    } else {
        assert_true(H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    }
    uint32_t mask = 0;
    assert_true(H5Dget_chunk_storage_size(d, &at, &size) >= 0);
    uint8_t *chunk = xmalloc(size);
    assert_true(H5Dread_chunk(d, H5P_DEFAULT, &at, &mask, chunk) >= 0);
    *stored = size;
    H5Dclose(d), H5Pclose(dcpl), H5Sclose(space), H5Fclose(f);
    return chunk;
}

static int read_back(const char *path, uint8_t *out) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "x", H5P_DEFAULT);
    herr_t rc = H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(d), H5Fclose(f);
    return rc < 0 ? -1 : 0;
}

static void direct_chunks_are_what_the_filter_stores(void **state) {
    (void)state;
    h5_quiet();
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_h5util_%d.h5", (int)getpid());
    for (int c = 0; c < N_CASES; c++) {
        uint8_t *data = case_data(c), *back = xmalloc(sizes[c]);
        size_t want_size, size;
        uint8_t *want = stored_chunk(path, data, sizes[c], 0, &want_size); /* HDF5's filter */
        assert_int_equal(want_size, sizes[c] + 4);
        assert_memory_equal(want, data, sizes[c]);
        uint32_t sum = h5_fletcher32(data, sizes[c]);
        uint8_t le[4] = {(uint8_t)sum, (uint8_t)(sum >> 8), (uint8_t)(sum >> 16), (uint8_t)(sum >> 24)};
        assert_memory_equal(want + sizes[c], le, 4);
        uint8_t *chunk = stored_chunk(path, data, sizes[c], 1, &size); /* ours */
        assert_int_equal(size, want_size);
        assert_memory_equal(chunk, want, size);
        assert_int_equal(read_back(path, back), 0);
        assert_memory_equal(back, data, sizes[c]);
        /* one changed byte of the stored chunk: the read fails */
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), d = H5Dopen2(f, "x", H5P_DEFAULT);
        hsize_t at = 0;
        chunk[sizes[c] / 2] ^= 0x10;
        assert_true(H5Dwrite_chunk(d, H5P_DEFAULT, 0, &at, size, chunk) >= 0);
        H5Dclose(d), H5Fclose(f);
        assert_int_equal(read_back(path, back), -1);
        free(chunk), free(want), free(back), free(data);
    }
    remove(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(direct_chunks_are_what_the_filter_stores)};
    return cmocka_run_group_tests_name("HDF5 helpers", tests, NULL, NULL);
}
