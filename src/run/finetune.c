/* finetune.c: the fine-tuning run (see finetune.h): its data, model and optimizers, the
 * configuration it records and the file it writes, handed to the run lifecycle (run.h)
 * as a client whose steps, evaluation and checkpoints live in finetune_step.c,
 * finetune_eval.c and finetune_ckpt.c (finetune_tuner.h). */
#include "run/finetune.h"

#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "base/version.h"
#include "cpu/blas.h"
#include "cpu/threads.h"
#include "dist/dist.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/task_model.h"
#include "finetune_tuner.h"
#include "model/shard.h"

/* A hash of the task data's training examples and labels: resuming needs the same data. */
static uint64_t task_fingerprint(const TaskData *d) {
    uint64_t h = rng_key((uint64_t)task_info(d)->type, (uint64_t)task_examples(d, SPLIT_TRAIN));
    for (int64_t i = 0; i < task_examples(d, SPLIT_TRAIN); i++) {
        TaskExample e;
        task_example(d, SPLIT_TRAIN, i, &e);
        int64_t n = 0;
        for (int s = 0; s < e.n_seqs; s++) n += e.len[s];
        for (int64_t k = 0; k < n; k++) h = rng_key(h, (uint64_t)e.tokens[k]);
        h = rng_key(h, (uint64_t)(int64_t)(e.label * 1e6));
    }
    return h;
}

static void add_trainable(Tuner *t, const char *group, const GPTTensor *tensors, int n_tensors, size_t n,
                          float *params, float *grads, AdamW *opt) {
    t->tr[t->n_tr++] = (Trainable){group, tensors, n_tensors, n, params, grads, opt};
}

/* The run's resolved configuration for config.json. */
static json_t *finetune_config(void *ctx) {
    const Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    long steps = t->steps;
    const OptimConfig *op = &o->optim;
    char targets[16] = "";
    if (o->lora_rank) lora_targets_name(o->lora_targets, targets, sizeof targets);
    json_t *c = json_pack("{s:s,s:s,s:s,s:i,s:i,s:f,s:I,s:f,s:i,s:i}", "init", o->init, "data",
                          t->corpus ? t->corpus->spec : o->data[0], "task",
                          t->corpus ? "lm" : task_type_name(t->info->type), "batch", o->batch, "micro_batch",
                          t->max_seqs, "epochs", o->epochs, "steps", (json_int_t)steps, "lambda",
                          (double)o->lambda, "ranks", dist_size(), "eval_every", o->run.eval_every);
    json_object_set_new(c, "threads", json_integer(o->run.threads));
    json_object_set_new(c, "threads_reason", json_string(o->run.threads_why));
    json_object_set_new(c, "shard_optimizer", json_boolean(o->run.shard_optimizer));
    json_object_set_new(c, "async_ckpt", json_boolean(o->run.async_ckpt));
    json_object_set_new(c, "precision", json_string(precision_name(o->run.precision)));
    json_object_set_new(c, "grad_reduce", json_string(grad_reduce_names[o->run.grad_reduce]));
    json_object_set_new(c, "optim", json_pack("{s:f,s:I,s:f,s:f,s:s}", "lr", (double)op->lr, "warmup",
                                              (json_int_t)op->warmup, "weight_decay", (double)op->weight_decay, "clip",
                                              (double)op->clip, "schedule", "linear"));
    char base[32];
    finetune_fingerprint_text(t->base_fingerprint, base, sizeof base);
    json_object_set_new(c, "lora", o->lora_rank ? json_pack("{s:i,s:f,s:s,s:s}", "rank", o->lora_rank, "alpha",
                                                            (double)o->lora_alpha, "targets", targets,
                                                            "base_fingerprint", base)
                                                : json_null());
    json_object_set_new(c, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(c, "versions", json_pack("{s:s,s:s}", "gpt", GPT_VERSION, "openblas_core", blas_core_name()));
    return c;
}

/* Collective (a corpus is opened by all ranks): the data, checked against the model. */
static int open_data(Tuner *t, const FinetuneOptions *o, const GPTConfig *cfg) {
    char format[32];
    const char *first = blend_spec_path(o->data[0]);
    if (h5_file_format(first, format, sizeof format)) format[0] = '\0'; /* task_load names what is wrong */
    if (!strcmp(format, CORPUS_FORMAT)) { /* continued pre-training, on one corpus or a blend */
        if (!(t->corpus = blend_open(o->data, o->n_data))) return -1;
        const Blend *b = t->corpus;
        int rc = 0;
        t->fingerprint = b->fingerprint;
        if (blend_vocab_size(b) > cfg->vocab_size)
            rc = gpt_error("%s has a vocabulary of %d tokens, more than the %d of the model %s", b->path[0],
                           blend_vocab_size(b), cfg->vocab_size, o->init);
        else rc = blend_windows(t->corpus, cfg->n_ctx);
        t->n_train = t->n_val = 0;
        if (!rc) blend_split_windows(b, SPLIT_VAL, cfg->n_ctx, 100, t->corpus_val);
        for (int c = 0; !rc && c < b->n; c++) t->n_train += b->windows[c], t->n_val += t->corpus_val[c];
        t->max_seqs = 1;
        return dist_agree(rc);
    }
    int rc = 0;
    if (o->n_data > 1) rc = gpt_error("--data: a blend is of corpora (gpt prepare); %s is not one", first);
    else if (!(t->td = task_load(o->data[0]))) rc = -1;
    else if ((t->info = task_info(t->td))->vocab_size > cfg->vocab_size)
        rc = gpt_error("%s: its tokenizer has %d tokens, more than the vocabulary of the model %s (%d)", o->data[0],
                       t->info->vocab_size, o->init, cfg->vocab_size);
    else if (t->info->n_ctx > cfg->n_ctx)
        rc = gpt_error("%s: sequences of up to %d tokens, longer than the context of the model %s (%d); prepare "
                       "it with --n-ctx %d", o->data[0], t->info->n_ctx, o->init, cfg->n_ctx, cfg->n_ctx);
    else if ((t->n_train = task_examples(t->td, SPLIT_TRAIN)) < 1)
        rc = gpt_error("%s: /train has no examples", o->data[0]);
    if (!rc) {
        t->n_val = task_examples(t->td, SPLIT_VAL);
        t->max_seqs = 1;
        for (int s = 0; s < 2; s++)
            for (int64_t i = 0; i < task_examples(t->td, s); i++) {
                TaskExample e;
                task_example(t->td, s, i, &e);
                if (e.n_seqs > t->max_seqs) t->max_seqs = e.n_seqs;
            }
        t->fingerprint = task_fingerprint(t->td);
        t->lambda_on = o->lambda > 0.0f;
    }
    return dist_agree(rc);
}

/* Rank 0: the data's tokenizer (for the files written), which must be the model's. */
static int load_tokenizer(Tuner *t, const FinetuneOptions *o) {
    const char *data = t->corpus ? t->corpus->path[0] : o->data[0];
    if (!(t->tok = tokenizer_load(data))) return -1;
    return model_file_check_tokenizer(o->init, t->tok, data);
}

/* Every rank: the model (or the frozen base and its adapters), the head and the optimizers. */
static int build(Tuner *t, const FinetuneOptions *o, const GPTConfig *cfg, const OptimConfig *oc) {
    double sparsity = 0.0;
    int rc = model_file_read_pruned(o->init, &sparsity);
    if (!rc && !(t->m = model_file_load(o->init, t->max_seqs, o->lora_rank == 0))) rc = -1;
    if (!rc) gpt_set_precision(t->m, o->run.precision);
    if (dist_agree(rc)) return -1;
    if (o->lora_rank) {
        t->base_fingerprint = gpt_params_fingerprint(t->m);
        t->lora = lora_create(cfg, t->max_seqs * cfg->n_ctx, o->lora_rank, o->lora_alpha, o->lora_targets);
        lora_init(t->lora, o->seed);
        t->m->lora = t->lora;
        add_trainable(t, "lora", t->lora->tensors, t->lora->n_tensors, t->lora->n_params, t->lora->params,
                      t->lora->grads, adamw_create(oc, t->lora->n_params));
    } else {
        if (sparsity > 0.0) t->pruned = prune_mask_create(t->m);
        add_trainable(t, "model", t->m->tensors, t->m->n_tensors, t->m->n_params, t->m->params, t->m->grads,
                      shard_optimizer_create(oc, t->m, dist_rank(), dist_size(), o->run.shard_optimizer));
    }
    if (!t->corpus) {
        t->head = head_create(t->info->type, t->info->label_kind, t->info->n_classes, cfg->n_embd, t->max_seqs);
        head_init(t->head, rng_key(o->seed, 1));
        add_trainable(t, "head", t->head->tensors, t->head->n_tensors, t->head->n_params, t->head->params,
                      t->head->grads, adamw_create(oc, t->head->n_params));
    }
    return 0;
}

/* Rank 0: RUN_DIR/model.h5: a plain model after continued full pre-training, else a task
 * model (the model or the adapters, and the head if any). */
static int finetune_write_result(void *ctx, const char *path) {
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    int rc;
    gradsync_gather_wait(t->sync);
    if (t->corpus && !t->lora) rc = model_file_write(path, t->m, t->tok);
    else {
        int K = t->head && t->info->label_kind == LABEL_CLASS ? t->info->n_classes : 0, n_names = 0;
        char **names = xcalloc((size_t)(K ? K : 1), sizeof(char *));
        for (int k = 0; k < K && task_class_name(t->td, k); k++) names[n_names++] = (char *)task_class_name(t->td, k);
        char base[PATH_MAX]; /* absolute: the adapters are used from other directories */
        if (!realpath(o->init, base)) snprintf(base, sizeof base, "%s", o->init);
        rc = task_model_write(path, t->m, t->lora, base, t->base_fingerprint, t->head, t->head ? t->info : NULL,
                              names, n_names, t->tok);
        free(names);
    }
    return rc;
}

/* Parameters that train: the model's or the adapters', and the head's. */
static size_t trained_params(const Tuner *t) {
    size_t n = 0;
    for (int i = 0; i < t->n_tr; i++) n += t->tr[i].n;
    return n;
}

/* After the resume, before the run directory is prepared: the step's buffers and the opening line. */
static int finetune_start(void *ctx, int resumed) {
    (void)resumed;
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    int G = o->batch, T = t->m->cfg.n_ctx;
    finetune_alloc_passes(t);
    t->step_idx = xmalloc(sizeof(int64_t) * (size_t)G);
    t->step_keys = xmalloc(sizeof(uint64_t) * (size_t)G);
    if (t->corpus) t->windows = xmalloc(sizeof(int32_t) * (size_t)G * (T + 1));
    if (dist_rank() == 0) {
        printf("fine-tuning %s (%s) on %s: %lld %s, %d a step over %d rank(s), %ld steps (%.3g epochs); training "
               "%zu parameters%s", o->init, t->corpus ? "language modelling" : task_type_name(t->info->type),
               t->corpus ? t->corpus->spec : o->data[0],
               (long long)t->n_train, t->corpus ? "windows" : "examples", G, dist_size(), t->steps, o->epochs,
               trained_params(t), t->lora ? " (LoRA adapters)" : "");
        if (!t->corpus) printf("; lambda %g", (double)o->lambda);
        printf("%s", t->pruned ? "; keeping the pruned weights zero" : "");
        char threads[200];
        printf("; %s; %s\n", compute_threads_describe(o->run.threads, o->run.threads_why, threads, sizeof threads),
               precision_description(o->run.precision));
        fflush(stdout);
    }
    return 0;
}

int finetune_run(const FinetuneOptions *opts) {
    int rc;
    FinetuneOptions resolved = *opts;
    RunOptions *r = &resolved.run;
    r->threads = compute_threads_setup(r->threads, r->threads_why, sizeof r->threads_why);
    const FinetuneOptions *o = &resolved;
    Tuner t = {.o = o};
    GPTConfig cfg;
    if ((rc = dist_agree(model_file_read_config(o->init, &cfg)))) return -1;
    if ((rc = open_data(&t, o, &cfg))) goto out;
    /* a pass holds at least one whole example */
    if (t.max_seqs < o->micro_batch) t.max_seqs = o->micro_batch;
    t.steps = (long)ceil(o->epochs * (double)t.n_train / (double)o->batch);
    if (t.steps < 1) t.steps = 1;
    t.oc = o->optim;
    t.oc.total_steps = t.steps;
    t.oc.warmup = (long)ceil(o->warmup_fraction * (double)t.steps);
    t.oc.linear_decay = 1;
    if ((rc = build(&t, o, &cfg, &t.oc))) goto out;
    if (!t.lora)
        t.sync = gradsync_create(t.m, (size_t)GRADSYNC_BUCKET_MB << 20, o->run.shard_optimizer, o->run.grad_reduce);
    if (dist_rank() == 0) rc = load_tokenizer(&t, o);
    if ((rc = dist_agree(rc))) goto out;
    RunClient c = {.cmd = "finetune", .out = o->out, .opt = &o->run, .steps = t.steps, .global_batch = o->batch,
                   .seed = o->seed, .fingerprint = t.fingerprint,
                   .data = t.corpus ? t.corpus->spec : o->data[0], .trained_floats = trained_params(&t),
                   .ctx = &t, .load = finetune_load, .config = finetune_config, .start = finetune_start,
                   .read_step = finetune_read_step, .backward = finetune_backward, .update = finetune_update,
                   .loss = finetune_loss, .evaluate = t.n_val > 0 ? finetune_evaluate : NULL, .save = finetune_save,
                   .write_result = finetune_write_result};
    rc = run_training(&c);
out:
    finetune_free_passes(&t);
    free(t.step_idx), free(t.step_keys), free(t.windows);
    for (int i = 0; i < t.n_tr; i++) adamw_free(t.tr[i].opt);
    prune_mask_free(t.pruned);
    gradsync_free(t.sync);
    if (t.m) t.m->lora = NULL;
    gpt_free(t.m);
    lora_free(t.lora);
    head_free(t.head);
    task_free(t.td);
    blend_close(t.corpus);
    tokenizer_free(t.tok);
    return rc;
}
