/* task_jsonl.c: task records from JSON Lines (base/jsonl.h reads the lines): an object a
 * line with the task's text fields, "choices" for choice, and "label". */
#include "task_records.h"

#include <jansson.h>
#include <stdlib.h>

#include "base/jsonl.h"
#include "base/util.h"

static int json_piece(Reader *r, json_t *obj, const char *field, Record *rec) {
    json_t *v = json_object_get(obj, field);
    if (!v) return jsonl_error(r->path, r->line, "field \"%s\" is missing", field);
    if (!json_is_string(v)) return jsonl_error(r->path, r->line, "field \"%s\" is not a string", field);
    task_add_piece(rec, json_string_value(v), json_string_length(v), field, -1);
    return 0;
}

static int json_record(Reader *r, json_t *obj, Record *rec) {
    TaskType type = r->opt->type;
    for (int i = 0; i < task_n_fields(type); i++)
        if (json_piece(r, obj, task_fields[type][i], rec)) return -1;
    if (type == TASK_CHOICE) {
        json_t *a = json_object_get(obj, TASK_ANSWERS);
        if (!a) return jsonl_error(r->path, r->line, "field \"%s\" is missing", TASK_ANSWERS);
        if (!json_is_array(a) || json_array_size(a) < 2)
            return jsonl_error(r->path, r->line, "field \"%s\" is not an array of at least 2 strings", TASK_ANSWERS);
        for (size_t k = 0; k < json_array_size(a); k++) {
            json_t *s = json_array_get(a, k);
            if (!json_is_string(s))
                return jsonl_error(r->path, r->line, "field \"%s\"[%zu] is not a string", TASK_ANSWERS, k);
            task_add_piece(rec, json_string_value(s), json_string_length(s), TASK_ANSWERS, (int)k);
        }
    }
    json_t *label = json_object_get(obj, "label");
    rec->has_label = label && !json_is_null(label);
    if (json_is_number(label)) rec->label_is_number = 1, rec->label_number = json_number_value(label);
    else if (json_is_string(label)) rec->label_text = json_string_value(label), rec->label_len = json_string_length(label);
    else if (rec->has_label)
        return jsonl_error(r->path, r->line, "field \"label\" is not a number or a string");
    return task_add_record(r, rec);
}

int task_read_jsonl(Reader *r, FILE *f) {
    JsonlReader *in = jsonl_from(f, r->path, "a JSON object with the task's fields and \"label\"", 0);
    Record rec = {0};
    json_t *obj;
    int rc;
    while ((rc = jsonl_next(in, &obj)) > 0) {
        r->line = jsonl_line(in);
        task_record_reset(&rec);
        rc = json_record(r, obj, &rec);
        json_decref(obj);
        if (rc) break;
    }
    jsonl_close(in);
    free(rec.pieces);
    return rc;
}
