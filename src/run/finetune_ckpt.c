/* finetune_ckpt.c: what a fine-tuning checkpoint holds and how a resume checks it (see
 * finetune_tuner.h). The model's trainable (full fine-tuning) is the checkpoint's
 * model and moments; every other trainable (the LoRA adapters, the head) is an extra
 * (checkpoint.h). A LoRA run records its base model's fingerprint in config.json, kept
 * in every checkpoint, since adapters only fit the base they were trained on. */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "dist/dist.h"
#include "files/checkpoint_writer.h"
#include "finetune_tuner.h"

static AdamW *model_opt(Tuner *t) { return finetune_model_trainable(t) ? t->tr[0].opt : NULL; }

/* The trainables besides the model, as checkpoint extras; returns how many. */
static int extras_of(Tuner *t, CkptExtra *x) {
    int n = 0;
    for (int i = finetune_model_trainable(t) ? 1 : 0; i < t->n_tr; i++)
        x[n++] = (CkptExtra){t->tr[i].group, t->tr[i].n_tensors, t->tr[i].tensors, t->tr[i].params, t->tr[i].opt->m,
                             t->tr[i].opt->v};
    return n;
}

int finetune_save(void *ctx, CkptState *st, CkptWriter *w) {
    Tuner *t = ctx;
    CkptExtra x[MAX_TRAINABLES];
    int n = extras_of(t, x);
    st->optim_step = t->tr[0].opt->step;
    gradsync_gather_wait(t->sync); /* the checkpoint checks the whole model finite */
    return ckpt_save(w, "finetune", t->o->out, t->o->run.keep, t->m, model_opt(t), st, t->tok, x, n);
}

void finetune_fingerprint_text(uint64_t fp, char *buf, size_t size) { snprintf(buf, size, "%016llx", (unsigned long long)fp); }

int finetune_load(void *ctx, const char *path, const GPTConfig *cfg, const CkptState *st) {
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    if (memcmp(cfg, &t->m->cfg, offsetof(GPTConfig, dropout_embd)) || st->seed != o->seed ||
        st->global_batch != o->batch)
        return gpt_error("%s belongs to another fine-tuning (the model shape, --seed or --batch differ: it "
                         "was made from %s with seed %llu and batch %lld)", path, st->corpus,
                         (unsigned long long)st->seed, (long long)st->global_batch);
    if (t->lora) { /* adapters only fit the base they were trained on */
        json_t *saved = json_loads(st->config, 0, NULL);
        const char *fp = json_string_value(json_object_get(json_object_get(saved, "lora"), "base_fingerprint"));
        char base[32], now[32];
        snprintf(base, sizeof base, "%s", fp ? fp : "not recorded");
        json_decref(saved);
        finetune_fingerprint_text(t->base_fingerprint, now, sizeof now);
        if (strcmp(base, now))
            return gpt_error("%s: its LoRA adapters were trained on another base model than --init %s (base "
                             "fingerprint %s, now %s); resume with the --init it was started with", path, o->init,
                             base, now);
    }
    CkptExtra x[MAX_TRAINABLES];
    int nx = extras_of(t, x);
    if ((model_opt(t) && ckpt_read_tensors(path, t->m, model_opt(t))) || dist_agree(ckpt_read_extras(path, x, nx)))
        return -2;
    for (int i = 0; i < t->n_tr; i++) t->tr[i].opt->step = st->optim_step;
    return 0;
}
