/*
 * tests/kernels/test_cuda_rope.c — cuda_rope() against cpu_rope(): NeoX (qwen3_5 partial
 * rotary on the query half of q_proj rows, and on k) and interleaved (GGUF llama, full rotary), odd head
 * sizes, positions up to 500k, f32 and bf16; and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_rope.h"
#include "ktest.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>

struct rope_case {
    int64_t n_tok, tok_stride; /* 0: n_heads * head_stride */
    int n_heads, head_stride, rot_dim;
    float theta;
    bool neox;
};

static void rope_run(const struct rope_case *c, enum dtype t)
{
    int64_t ts = c->tok_stride ? c->tok_stride : (int64_t)c->n_heads * c->head_stride;
    int64_t total = c->n_tok * ts;
    float *x = ktest_random((size_t)total, -2.0f, 2.0f);
    if (t == DTYPE_BF16)
        ktest_round_bf16(x, (size_t)total);
    int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)c->n_tok);
    for (int64_t i = 0; i < c->n_tok; i++)
        pos[i] = (int32_t)(i == 0 ? 0 : ktest_below(i % 2 ? 4096 : 500000));
    float *inv_freq = xmalloc(sizeof(float) * (size_t)(c->rot_dim / 2));
    cpu_rope_inv_freq(inv_freq, c->rot_dim, c->theta);

    uint16_t *xb = t == DTYPE_BF16 ? ktest_to_bf16(x, (size_t)total) : NULL;
    size_t es = t == DTYPE_F32 ? 4 : 2;
    void *dx = ktest_dev_upload(xb ? (void *)xb : (void *)x, es * (size_t)total);
    float *dfreq = ktest_dev_upload(inv_freq, sizeof(float) * (size_t)(c->rot_dim / 2));
    int32_t *dpos = ktest_dev_upload(pos, sizeof(int32_t) * (size_t)c->n_tok);
    struct cuda_rope a = {.type = t,
                          .x = dx,
                          .n_tok = c->n_tok,
                          .tok_stride = ts,
                          .n_heads = c->n_heads,
                          .head_stride = c->head_stride,
                          .rot_dim = c->rot_dim,
                          .inv_freq = dfreq,
                          .pos = dpos,
                          .neox = c->neox};
    int rc = cuda_rope(&a, NULL);
    float *got = ktest_download_f32(dx, (size_t)total, t == DTYPE_BF16);
    for (int64_t i = 0; i < c->n_tok; i++)
        cpu_rope(x + i * ts, c->n_heads, c->head_stride, c->rot_dim, inv_freq, pos[i], c->neox);
    char shape[96];
    snprintf(shape, sizeof shape, "%s %s tok=%lld heads=%dx%d rot=%d",
             t == DTYPE_F32 ? "f32" : "bf16", c->neox ? "neox" : "interleaved", (long long)c->n_tok,
             c->n_heads, c->head_stride, c->rot_dim);
    ktest_check("rope", shape, rc, got, x, (size_t)total,
                t == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(x), free(pos), free(inv_freq), free(xb), free(got);
    ktest_dev_free(dx), ktest_dev_free(dfreq), ktest_dev_free(dpos);
}

int main(void)
{
    ktest_init("test_cuda_rope");
    const struct rope_case cases[] = {
            {3, 0, 24, 512, 64, 1e7f, true}, /* qwen3_5 q_proj rows: query half of [query|gate] */
            {5, 0, 4, 256, 64, 1e7f, true},  /* qwen3_5 k */
            {4, 0, 9, 64, 64, 1e4f, false},  /* llama, full rotary, interleaved */
            {4, 0, 9, 64, 64, 1e4f, true},
            {7, 0, 3, 38, 22, 1e4f, true}, /* odd sizes: 11 pairs */
            {6, 131, 5, 26, 26, 5e5f, false},
            {1, 0, 1, 2, 2, 1e4f, true},
            {33, 0, 2, 128, 32, 1e6f, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rope_run(&cases[i], DTYPE_F32);
        rope_run(&cases[i], DTYPE_BF16);
    }
    struct cuda_rope bad = {.type = DTYPE_F32,
                            .x = (void *)16,
                            .n_tok = 1,
                            .tok_stride = 64,
                            .n_heads = 1,
                            .head_stride = 64,
                            .rot_dim = 63,
                            .inv_freq = (void *)16,
                            .pos = (void *)16,
                            .neox = true};
    ktest_check_rejected("rope", "odd rot_dim", cuda_rope(&bad, NULL));
    bad.rot_dim = 128;
    ktest_check_rejected("rope", "rot_dim > head_stride", cuda_rope(&bad, NULL));
    return ktest_finish();
}
