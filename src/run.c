/* run.c: the run directory, stop signals, time limit and resume report shared by the
 * training commands (see run.h). */
#include "run.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static int mkdir_p(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(path, 0777) && errno != EEXIST ? -1 : 0;
}

/* Keeps the lines of metrics.jsonl up to `step` (a torn last line is dropped). */
static int cut_metrics(const char *path, long step) {
    FILE *in = fopen(path, "r");
    if (!in) return 0; /* none yet */
    char tmp[4096 + 8], line[8192];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return gpt_error("%s: cannot create: %s", tmp, strerror(errno));
    }
    while (fgets(line, sizeof line, in)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        if (json_is_integer(s) && json_integer_value(s) <= step && strchr(line, '\n')) fputs(line, out);
        json_decref(j);
    }
    fclose(in);
    int bad = ferror(out) | fclose(out);
    if (bad || rename(tmp, path)) return gpt_error("%s: cannot rewrite: %s", path, strerror(errno));
    return 0;
}

int run_dir_prepare(const char *out, int overwrite, int resuming, json_t *config, long resumed_step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", out);
    struct stat st;
    if (!overwrite && !resuming && stat(path, &st) == 0)
        return gpt_error("%s holds another run (%s exists); pass --overwrite to replace it, or --resume auto to "
                         "continue it", out, path);
    if (mkdir_p(out)) return gpt_error("%s: cannot create the run directory: %s", out, strerror(errno));
    if (json_dump_file(config, path, JSON_INDENT(2) | JSON_SORT_KEYS))
        return gpt_error("%s: cannot write", path);
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    if (resumed_step > 0) return cut_metrics(path, resumed_step);
    FILE *f = fopen(path, "w");
    if (!f) return gpt_error("%s: cannot create: %s", path, strerror(errno));
    fclose(f);
    return 0;
}

FILE *run_metrics_open(const char *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    return fopen(path, "a");
}

void run_metrics_write(FILE *f, json_t *line) {
    if (!f) return;
    json_dumpf(line, f, JSON_COMPACT);
    fputc('\n', f);
    fflush(f);
}

/* ---- signals ---- */

volatile sig_atomic_t run_stop_signal;

static void on_stop_signal(int sig) { run_stop_signal = sig; }

void run_catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

const char *run_stop_reason(const char *otherwise) {
    return run_stop_signal == SIGTERM ? "on SIGTERM" : run_stop_signal == SIGINT ? "on SIGINT"
           : run_stop_signal == SIGUSR1 ? "on SIGUSR1" : otherwise;
}

int run_out_of_time(double time_limit, double t_start, double step_s, double eval_s, double ckpt_s) {
    if (time_limit <= 0.0) return 0;
    double reserve = 1.5 * (step_s + eval_s + ckpt_s) + 5.0;
    return now_seconds() - t_start + reserve >= time_limit;
}

void run_print_duration(char *buf, size_t size, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

/* Prints "name: old -> new", after "changed on resume:" the first time. */
static void print_change(int *n, const char *section, const char *key, json_t *old, json_t *now) {
    char *a = old ? json_dumps(old, JSON_ENCODE_ANY) : NULL, *b = json_dumps(now, JSON_ENCODE_ANY);
    printf("%s %s%s%s: %s -> %s", (*n)++ ? "," : "changed on resume:", section, key ? "." : "", key ? key : "",
           a ? a : "(none)", b ? b : "?");
    free(a), free(b);
}

void run_report_changes(const char *saved_text, const char *now_text) {
    json_t *saved = json_loads(saved_text, 0, NULL), *now = json_loads(now_text, 0, NULL);
    const char *section, *key;
    json_t *value, *v;
    int n = 0;
    json_object_foreach(now, section, value) {
        json_t *old = json_object_get(saved, section);
        if (!strcmp(section, "versions") || !strcmp(section, "resume") || json_equal(old, value)) continue;
        if (!json_is_object(value)) print_change(&n, section, NULL, old, value);
        else json_object_foreach(value, key, v) {
                if (!json_equal(json_object_get(old, key), v)) print_change(&n, section, key, json_object_get(old, key), v);
            }
    }
    if (n) printf("\n");
    json_decref(saved);
    json_decref(now);
}
