/* test_jsonl.c: the JSON Lines reader (base/jsonl.h): lines of any length, the byte
 * order mark, blank lines, the last line without '\n', and its messages naming
 * FILE:LINE for a line that is not JSON or not an object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/jsonl.h"
#include "base/util.h"

/* A reader over text in memory (the stream is closed by the caller). */
static JsonlReader *reader(const char *text, FILE **f, int flags) {
    *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(*f);
    return jsonl_from(*f, "t.jsonl", "a record {\"n\": i}", flags);
}

/* The "n" of every record into n[], their lines into line[]; the last jsonl_next's result. */
static int read_all(JsonlReader *r, long *n, size_t *line, int max, int *count) {
    json_t *j;
    int rc;
    *count = 0;
    while ((rc = jsonl_next(r, &j)) > 0) {
        assert_true(*count < max);
        n[*count] = (long)json_integer_value(json_object_get(j, "n"));
        line[(*count)++] = jsonl_line(r);
        json_decref(j);
    }
    return rc;
}

static void long_line(void **state) {
    (void)state;
    size_t big = 1 << 20; /* far past any fixed buffer */
    char *text = xmalloc(big + 64);
    int at = sprintf(text, "{\"n\": 1}\n{\"n\": 2, \"s\": \"");
    memset(text + at, 'x', big);
    strcpy(text + at + big, "\"}\n{\"n\": 3}\n");
    FILE *f;
    JsonlReader *r = reader(text, &f, 0);
    json_t *j;
    assert_int_equal(jsonl_next(r, &j), 1);
    json_decref(j);
    assert_int_equal(jsonl_next(r, &j), 1);
    assert_int_equal(jsonl_line(r), 2);
    assert_int_equal(json_string_length(json_object_get(j, "s")), big);
    size_t len;
    const char *line = jsonl_text(r, &len);
    assert_int_equal(len, (size_t)at - 9 + big + 2);
    assert_memory_equal(line, text + 9, len);
    json_decref(j);
    assert_int_equal(jsonl_next(r, &j), 1);
    assert_int_equal(jsonl_line(r), 3);
    json_decref(j);
    assert_int_equal(jsonl_next(r, &j), 0);
    jsonl_close(r);
    fclose(f);
    free(text);
}

static void bom_blank_lines_and_no_final_newline(void **state) {
    (void)state;
    const char *text = "\xEF\xBB\xBF{\"n\": 1}\n\n   \t\r\n{\"n\": 2}\r\n \n{\"n\": 3}";
    FILE *f;
    JsonlReader *r = reader(text, &f, 0);
    long n[8];
    size_t line[8];
    int count;
    assert_int_equal(read_all(r, n, line, 8, &count), 0);
    assert_int_equal(count, 3);
    assert_int_equal(n[0], 1), assert_int_equal(line[0], 1);
    assert_int_equal(n[1], 2), assert_int_equal(line[1], 4);
    assert_int_equal(n[2], 3), assert_int_equal(line[2], 6);
    jsonl_close(r);
    fclose(f);
    /* the byte order mark is left out of the first line's text */
    r = reader(text, &f, 0);
    json_t *j;
    size_t len;
    assert_int_equal(jsonl_next(r, &j), 1);
    assert_string_equal(jsonl_text(r, &len), "{\"n\": 1}");
    json_decref(j);
    jsonl_close(r);
    fclose(f);
}

static void bad_json_names_file_and_line(void **state) {
    (void)state;
    FILE *f;
    JsonlReader *r = reader("{\"n\": 1}\n\n{\"n\": \n{\"n\": 4}\n", &f, 0);
    long n[8];
    size_t line[8];
    int count;
    assert_int_equal(read_all(r, n, line, 8, &count), -1);
    assert_int_equal(count, 1);
    const char *msg = gpt_last_error();
    assert_true(strncmp(msg, "t.jsonl:3: not valid JSON (", 27) == 0);
    assert_non_null(strstr(msg, "; expected a record {\"n\": i}"));
    jsonl_close(r);
    fclose(f);
}

static void a_record_is_an_object(void **state) {
    (void)state;
    const char *bad[] = {"[1, 2]", "5", "\"text\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"n\": 1}\n%s\n", bad[i]);
        FILE *f;
        JsonlReader *r = reader(text, &f, 0);
        long n[4];
        size_t line[4];
        int count;
        assert_int_equal(read_all(r, n, line, 4, &count), -1);
        assert_string_equal(gpt_last_error(), "t.jsonl:2: expected a record {\"n\": i}");
        jsonl_close(r);
        fclose(f);
    }
    /* one line alone, and the default description */
    json_t *j;
    json_error_t err;
    assert_int_equal(jsonl_decode("[1]", 3, &j, &err), -1);
    assert_null(j);
    assert_int_equal(jsonl_refused("x.jsonl", 7, NULL, &err), -1);
    assert_string_equal(gpt_last_error(), "x.jsonl:7: expected a JSON object");
    assert_int_equal(jsonl_decode(" \t\r", 3, &j, &err), 0);
    assert_int_equal(jsonl_error("x.jsonl", 9, "field \"%s\" is missing", "text"), -1);
    assert_string_equal(gpt_last_error(), "x.jsonl:9: field \"text\" is missing");
}

static void skip_bad_drops_torn_lines(void **state) {
    (void)state;
    FILE *f;
    JsonlReader *r = reader("{\"n\": 1}\n[2]\n{\"n\": 3}\n{\"n\": 4, \"lo", &f, JSONL_SKIP_BAD);
    long n[8];
    size_t line[8];
    int count;
    assert_int_equal(read_all(r, n, line, 8, &count), 0);
    assert_int_equal(count, 2);
    assert_int_equal(n[0], 1), assert_int_equal(n[1], 3);
    assert_int_equal(line[1], 3);
    jsonl_close(r);
    fclose(f);
}

static void missing_file(void **state) {
    (void)state;
    assert_null(jsonl_open("/nonexistent/dir/x.jsonl", NULL, 0));
    assert_non_null(strstr(gpt_last_error(), "/nonexistent/dir/x.jsonl: cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(long_line),
        cmocka_unit_test(bom_blank_lines_and_no_final_newline),
        cmocka_unit_test(bad_json_names_file_and_line),
        cmocka_unit_test(a_record_is_an_object),
        cmocka_unit_test(skip_bad_drops_torn_lines),
        cmocka_unit_test(missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
