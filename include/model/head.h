/* head.h: the task output layer W_y of fine-tuning and its losses (GPT-1, section 3.3).
 *
 * The head reads the final hidden state of each sequence's extract token (the last
 * token). Per task (model/task_kind.h; the sequences: text/task.h):
 *   classify, entail  logits = W_y h + b over K classes, cross-entropy
 *   similar           h = h(a;b) + h(b;a); classes as above, or one real output with the
 *                     squared error (regression)
 *   choice            one score W_y h_k + b per answer, softmax across the example's answers
 * Parameters live in one small flat buffer with a tensor table ("weight" (n_out, C) with
 * weight decay, "bias" (n_out) without), like the model's, for the optimizer and files.
 * Pure math: no MPI, no files. */
#ifndef GPT_HEAD_H
#define GPT_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "model/task_kind.h"

typedef struct {
    TaskType type;
    LabelKind kind;
    int n_out;               /* K classes, or 1 (a real value, or a score per answer) */
    int C;
    int n_tensors;           /* 2 */
    GPTTensor tensors[2];    /* weight (n_out, C), bias (n_out) */
    size_t n_params;
    float *params, *grads;   /* weight then bias */
    int max_seqs;
    float *x, *y, *dx;       /* scratch: features (max_seqs, C), outputs (max_seqs, n_out), dfeatures */
} TaskHead;

/* A head for up to max_seqs sequences a call; parameters zero. n_classes: K for
 * LABEL_CLASS, ignored otherwise. */
TaskHead *head_create(TaskType type, LabelKind kind, int n_classes, int C, int max_seqs);
void head_free(TaskHead *h);
/* GPT-1's initialisation: weight N(0, 0.02), bias 0; deterministic in seed. */
void head_init(TaskHead *h, uint64_t seed);

/* E examples whose S = sum n_seqs[e] sequences have extract states feats (S, C), in order.
 * out receives the head's outputs: LABEL_CLASS (E, K) logits, LABEL_REAL (E) values,
 * LABEL_CHOICE (S) scores. With labels not NULL returns the summed loss over the examples
 * (cross-entropy, or squared error; an example whose label is NAN, unlabelled, adds no loss
 * and no gradient) and, when dfeats is not NULL, accumulates
 * grad_scale * dLoss into the head's gradients and writes dfeats (S, C) = grad_scale *
 * dLoss/dfeats (overwritten). */
double head_forward_backward(TaskHead *h, const float *feats, const int *n_seqs, int E, const double *labels,
                             float grad_scale, float *dfeats, float *out);

#endif
