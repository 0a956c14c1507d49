/* safetensors.c: the safetensors container (see safetensors.h). */
#include "interop/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

static const struct {
    const char *name;
    StDtype dtype;
    int bytes;
} dtypes[] = {{"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8}};
#define N_DTYPES (int)(sizeof dtypes / sizeof dtypes[0])

static int dtype_bytes(StDtype d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dtype == d) return dtypes[i].bytes;
    return 0;
}

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

void st_close(SafeTensors *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->tensors[i].name);
    free(s->tensors);
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    free(s);
}

const StTensor *st_find(const SafeTensors *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}

/* One header entry into t; -1 naming the tensor and the field. */
static int parse_entry(const char *path, const char *name, json_t *v, uint64_t data_size, StTensor *t) {
    if (!json_is_object(v)) return gpt_error("%s: header: tensor '%s': expected an object", path, name);
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return gpt_error("%s: header: tensor '%s': \"dtype\" is missing or not a string", path, name);
    int k = 0;
    while (k < N_DTYPES && strcmp(dtypes[k].name, json_string_value(dt))) k++;
    if (k == N_DTYPES)
        return gpt_error("%s: header: tensor '%s': unsupported dtype '%s' (expected F32, F16, BF16 or F64)", path, name,
                         json_string_value(dt));
    t->dtype = dtypes[k].dtype;
    if (!json_is_array(shape) || json_array_size(shape) > ST_MAX_DIMS)
        return gpt_error("%s: header: tensor '%s': \"shape\" is missing or not an array of at most %d sizes", path,
                         name, ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *x = json_array_get(shape, (size_t)d);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return gpt_error("%s: header: tensor '%s': shape[%d] is not a size", path, name, d);
        t->shape[d] = json_integer_value(x);
        numel *= (uint64_t)t->shape[d];
        if (numel > data_size) /* also keeps the product from overflowing */
            return gpt_error("%s: header: tensor '%s': its shape needs more bytes than the file's data holds", path,
                             name);
    }
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < json_integer_value(b))
        return gpt_error("%s: header: tensor '%s': \"data_offsets\" is not [begin, end] with 0 <= begin <= end", path,
                         name);
    t->begin = (uint64_t)json_integer_value(b), t->end = (uint64_t)json_integer_value(e);
    if (t->end > data_size)
        return gpt_error("%s: header: tensor '%s': data_offsets [%llu, %llu] end outside the data (%llu bytes)", path,
                         name, (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)data_size);
    if (t->end - t->begin != numel * (uint64_t)dtype_bytes(t->dtype))
        return gpt_error("%s: header: tensor '%s': data_offsets span %llu bytes, but shape and dtype %s need %llu", path,
                         name, (unsigned long long)(t->end - t->begin), dtypes[k].name,
                         (unsigned long long)(numel * (uint64_t)dtype_bytes(t->dtype)));
    return 0;
}

static int by_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : x->end < y->end ? -1 : x->end > y->end;
}

SafeTensors *st_open(const char *path) {
    SafeTensors *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(path);
    s->fd = open(path, O_RDONLY);
    json_t *hdr = NULL;
    char *text = NULL;
    struct stat sb;
    uint8_t len8[8];
    if (s->fd < 0) {
        gpt_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(s->fd, &sb) || pread(s->fd, len8, 8, 0) != 8) {
        gpt_error("%s: header: truncated (a safetensors file starts with an 8-byte header length)", path);
        goto fail;
    }
    uint64_t n = 0, size = (uint64_t)sb.st_size;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n > ST_MAX_HEADER) {
        gpt_error("%s: header: its length %llu is more than the limit of %llu bytes", path, (unsigned long long)n,
                  (unsigned long long)ST_MAX_HEADER);
        goto fail;
    }
    if (n > size - 8) {
        gpt_error("%s: header: truncated: its length is %llu bytes, but the file has only %llu after it", path,
                  (unsigned long long)n, (unsigned long long)(size - 8));
        goto fail;
    }
    text = xmalloc(n + 1);
    if (pread(s->fd, text, n, 8) != (ssize_t)n) {
        gpt_error("%s: header: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    text[n] = '\0';
    json_error_t jerr;
    hdr = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr || !json_is_object(hdr)) {
        gpt_error("%s: header: not a JSON object (%s at byte %d)", path, hdr ? "another JSON value" : jerr.text,
                  hdr ? 0 : jerr.position);
        goto fail;
    }
    s->data_start = 8 + n;
    s->data_size = size - s->data_start;
    s->tensors = xcalloc(json_object_size(hdr), sizeof *s->tensors);
    const char *name;
    json_t *v;
    json_object_foreach(hdr, name, v) {
        if (!strcmp(name, "__metadata__")) {
            const char *k;
            json_t *mv;
            if (!json_is_object(v)) {
                gpt_error("%s: header: \"__metadata__\" is not an object", path);
                goto fail;
            }
            json_object_foreach(v, k, mv) if (!json_is_string(mv)) {
                gpt_error("%s: header: \"__metadata__\".%s is not a string", path, k);
                goto fail;
            }
            continue;
        }
        StTensor *t = &s->tensors[s->n];
        if (parse_entry(path, name, v, s->data_size, t)) goto fail;
        t->name = xstrdup(name);
        s->n++;
    }
    /* the tensors tile the data, as the reference reader requires: sorted by start, each
     * begins where the previous ends (no byte shared, none unclaimed), the last at its end */
    const StTensor **order = xmalloc(((size_t)s->n + 1) * sizeof *order);
    for (int i = 0; i < s->n; i++) order[i] = &s->tensors[i];
    qsort(order, (size_t)s->n, sizeof *order, by_begin);
    uint64_t at = 0;
    int bad = 0;
    for (int i = 0; i < s->n && !bad; at = order[i++]->end) {
        if (order[i]->begin < at)
            bad = gpt_error("%s: header: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                            order[i - 1]->name, (unsigned long long)order[i - 1]->begin,
                            (unsigned long long)order[i - 1]->end, order[i]->name,
                            (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end);
        else if (order[i]->begin > at)
            bad = gpt_error("%s: header: the data's bytes [%llu, %llu) before tensor '%s' belong to no tensor", path,
                            (unsigned long long)at, (unsigned long long)order[i]->begin, order[i]->name);
    }
    if (!bad && at != s->data_size)
        bad = gpt_error("%s: %llu bytes after the last tensor: the data must end with it (a file appended to?)", path,
                        (unsigned long long)(s->data_size - at));
    free(order);
    if (bad) goto fail;
    json_decref(hdr);
    free(text);
    return s;
fail:
    json_decref(hdr);
    free(text);
    st_close(s);
    return NULL;
}

int st_read_f32(const SafeTensors *s, const StTensor *t, float *out) {
    int64_t n = st_numel(t);
    size_t bytes = (size_t)(t->end - t->begin);
    uint8_t *raw = t->dtype == ST_F32 ? (uint8_t *)out : xmalloc(bytes ? bytes : 1);
    for (size_t done = 0; done < bytes;) {
        ssize_t r = pread(s->fd, raw + done, bytes - done, (off_t)(s->data_start + t->begin + done));
        if (r <= 0) {
            if (raw != (uint8_t *)out) free(raw);
            return gpt_error("%s: tensor '%s': cannot read its data: %s", s->path, t->name,
                             r < 0 ? strerror(errno) : "end of file");
        }
        done += (size_t)r;
    }
    if (t->dtype == ST_F32) return 0; /* little-endian, as this machine */
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == ST_F64) {
            double d;
            memcpy(&d, raw + 8 * i, 8);
            out[i] = (float)d;
        } else {
            uint16_t h;
            memcpy(&h, raw + 2 * i, 2);
            if (t->dtype == ST_F16) out[i] = half_to_float(h);
            else {
                uint32_t x = (uint32_t)h << 16;
                memcpy(&out[i], &x, 4);
            }
        }
    }
    free(raw);
    return 0;
}

int st_write(FILE *f, const char *path, const StOut *t, int n, const char *const (*meta)[2], int n_meta,
             StGet get, void *ctx, size_t scratch_floats) {
    json_t *hdr = json_object(), *m = json_object();
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array();
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            json_array_append_new(shape, json_integer(t[i].shape[d]));
            numel *= (uint64_t)t[i].shape[d];
        }
        json_object_set_new(hdr, t[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                                      (json_int_t)at, (json_int_t)(at + 4 * numel)));
        at += 4 * numel;
    }
    for (int k = 0; k < n_meta; k++) json_object_set_new(m, meta[k][0], json_string(meta[k][1]));
    json_object_set_new(hdr, "__metadata__", m);
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(text, 1, len, f) != len;
    for (size_t i = len; i < padded && !bad; i++) bad = fputc(' ', f) == EOF;
    free(text);
    float *scratch = xmalloc((scratch_floats ? scratch_floats : 1) * sizeof *scratch);
    for (int i = 0; i < n && !bad; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        bad = fwrite(get(ctx, i, scratch), sizeof(float), numel, f) != numel;
    }
    free(scratch);
    return bad ? gpt_error("%s: cannot write: %s", path, strerror(errno)) : 0;
}
