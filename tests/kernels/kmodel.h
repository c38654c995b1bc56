/*
 * tests/kernels/kmodel.h — what the GPU engine tests that drive cuda_model.h slot by slot
 * share: a forward call and a slot acquisition that print the engine's message on failure.
 *
 * Contract: header-only (static inline; each test is its own executable). Both return the
 * engine's status (0 or -1) and leave the verdict to the caller's checks.
 */
#ifndef CORTEX_TESTS_KMODEL_H
#define CORTEX_TESTS_KMODEL_H

#include "cuda_model.h"

#include <stdio.h>

/* One cuda_model_forward() of n sequences, last-row logits into logits. */
static inline int kmodel_forward(struct cuda_model *g, int n, const int *slots, const int64_t *past,
                                 const int32_t *const *toks, const int64_t *nt, float *logits)
{
    char err[512];
    int rc = cuda_model_forward(g, slots, past, toks, nt, n, MODEL_LOGITS_LAST, logits, err,
                                sizeof(err));
    if (rc)
        fprintf(stderr, "cuda_model_forward: %s\n", err);
    return rc;
}

static inline int kmodel_acquire(struct cuda_model *g, int *slot)
{
    char err[512];
    int rc = cuda_model_slot_acquire(g, slot, err, sizeof(err));
    if (rc)
        fprintf(stderr, "cuda_model_slot_acquire: %s\n", err);
    return rc;
}

#endif
