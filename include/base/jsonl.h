/* jsonl.h: JSON Lines, read one record at a time: the one reader of every file of
 * records (eval-choice data, task data, corpus inputs, a run's metrics.jsonl).
 *
 * A line is any number of bytes up to '\n' (no fixed buffer: a line of 1 GB is one
 * record). The rules are the same for every file:
 *   - a UTF-8 byte order mark at the start of the file is not content;
 *   - a line of nothing but spaces, tabs and '\r' is skipped (it still counts as a line);
 *   - every other line is one JSON value, and a record is a JSON object whose keys are
 *     all different (a repeated key is ambiguous, so it is refused);
 *   - lines count from 1, in size_t;
 *   - every message reads "FILE:LINE: what was expected", written here alone.
 * The last line needs no '\n'. The reader holds one line at a time. */
#ifndef GPT_JSONL_H
#define GPT_JSONL_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* -- one line, for callers that split the lines themselves (the corpus's slots) -- */

/* The rule for one line text[0..len) without its '\n': 1 with *record, a new reference
 * the caller owns (json_decref); 0 for a blank line (*record NULL); -1 for a line that is
 * no record (*record NULL, *err says why: jansson's text, or "" for JSON that is not an
 * object). Records no message: jsonl_refused() words it. */
int jsonl_decode(const char *text, size_t len, json_t **record, json_error_t *err);
/* The message for a line jsonl_decode refused: "PATH:LINE: not valid JSON (reason);
 * expected WHAT" or "PATH:LINE: expected WHAT", WHAT describing a record ("a JSON
 * object" when NULL). Returns -1 (gpt_error). */
int jsonl_refused(const char *path, size_t line, const char *what, const json_error_t *err);
/* "PATH:LINE: " and the printf-style rest, for what a caller finds wrong inside a record
 * (a field missing, out of range). Returns -1 (gpt_error). */
int jsonl_error(const char *path, size_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* -- a whole file, record by record -- */

typedef struct JsonlReader JsonlReader;

/* A line that is not a record is an error (the default), or skipped without a word
 * (JSONL_SKIP_BAD: a log that a crash may have left with a torn last line). */
enum { JSONL_SKIP_BAD = 1 };

/* Opens path ("-": standard input) for reading; WHAT describes a record for messages
 * (as jsonl_refused; not copied: it must outlive the reader). NULL with gpt_error()
 * naming the file if it cannot be opened. */
JsonlReader *jsonl_open(const char *path, const char *what, int flags);
/* The same over a stream the caller opened (fmemopen for text in memory) and keeps
 * owning: jsonl_close does not close it. path names it in messages. */
JsonlReader *jsonl_from(FILE *f, const char *path, const char *what, int flags);
/* The next record: 1 with *record, a new reference the caller owns (json_decref); 0 at
 * the end of the file; -1 with gpt_error() "PATH:LINE: ..." for a line that is no record
 * or a read error. Blank lines are skipped. */
int jsonl_next(JsonlReader *r, json_t **record);
/* The line of the record jsonl_next last returned (1-based). */
size_t jsonl_line(const JsonlReader *r);
/* Its bytes as they stand in the file (no '\n', the byte order mark left out), *len of
 * them and a NUL after; the reader's, valid until the next jsonl_next. */
const char *jsonl_text(const JsonlReader *r, size_t *len);
/* Closes what jsonl_open opened and frees the reader (NULL is fine). */
void jsonl_close(JsonlReader *r);

#endif
