/*
 * tests/kernels/bench_gdn.c — the chunked Gated DeltaNet prefill (cuda_gdn_chunked) against
 * the per-token recurrence (cuda_gdn_recurrent) on the 27B qwen3_5 shape (16 key heads, 48
 * value heads, Dk = Dv = 128, L2 norm on): one layer's delta rule for prompts of 512 and 4096
 * tokens, one sequence, and 8 sequences of 512; ms per layer for the recurrence and both
 * chunked variants (v1 plain loads, v2 next chunk prefetched), the speedup and tokens/s of the
 * faster chunked one, and the 48 GDN layers' share of a prompt. Inputs are random (made on the GPU); each run continues from the state
 * the previous one left (the kernels' speed does not depend on the values). Timings are
 * medians of event-timed runs after a warm-up.
 */
#include "kbench.h"
#include "cuda_device.h"
#include "cuda_gdn_chunked.h"
#include "cuda_random.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

/* Median ms of `reps` runs on a: the recurrence (variant -1) or cuda_gdn_chunked_variant(). */
static float time_gdn(const struct cuda_gdn_recurrent *a, int variant, int reps, cudaStream_t st)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[16];
    for (int i = -1; i < reps; i++) {
        CK(cudaEventRecord(e0, st));
        KC(variant >= 0 ? cuda_gdn_chunked_variant(a, variant, st) : cuda_gdn_recurrent(a, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        if (i >= 0)
            CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return kbench_median(t, reps);
}

int main(void)
{
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_gdn on %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    const int nk = 16, nv = 48, dk = 128, dv = 128;
    const int64_t max_rows = 4096;
    int64_t qks = 2 * nk * dk + nv * dv; /* q, k, v as the conv's output row: [q | k | v] */
    float *qkv, *g, *beta, *out, *state;
    CK(cudaMalloc((void **)&qkv, sizeof(float) * (size_t)(max_rows * qks)));
    CK(cudaMalloc((void **)&g, sizeof(float) * (size_t)(max_rows * nv)));
    CK(cudaMalloc((void **)&beta, sizeof(float) * (size_t)(max_rows * nv)));
    CK(cudaMalloc((void **)&out, sizeof(float) * (size_t)(max_rows * nv * dv)));
    CK(cudaMalloc((void **)&state, sizeof(float) * (size_t)8 * nv * dk * dv));
    KC(cuda_random_fill(DTYPE_F32, qkv, max_rows * qks, 1, 1.0f, st));
    /* g in [-0.1, 0.1) and beta in [-0.5, 0.5): values only matter to the arithmetic's speed,
     * which does not depend on them */
    KC(cuda_random_fill(DTYPE_F32, g, max_rows * nv, 2, 0.1f, st));
    KC(cuda_random_fill(DTYPE_F32, beta, max_rows * nv, 3, 0.5f, st));
    KC(cuda_random_fill(DTYPE_F32, state, (int64_t)8 * nv * dk * dv, 4, 0.1f, st));

    const struct {
        int seqs;
        int64_t tok;
    } runs[] = {{1, 512}, {1, 4096}, {8, 512}};
    printf("%-14s %12s %12s %12s %8s %14s %14s\n", "prompt", "recurrent ms", "chunked v1",
           "chunked v2", "speedup", "chunked tok/s", "48 layers ms");
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        struct cuda_gdn_recurrent a = {.n_seqs = runs[r].seqs,
                                       .n_tok = runs[r].tok,
                                       .n_k_heads = nk,
                                       .n_v_heads = nv,
                                       .k_dim = dk,
                                       .v_dim = dv,
                                       .q = qkv,
                                       .k = qkv + nk * dk,
                                       .qk_stride = qks,
                                       .v = qkv + 2 * nk * dk,
                                       .v_stride = qks,
                                       .g = g,
                                       .beta = beta,
                                       .gb_stride = nv,
                                       .out = out,
                                       .out_stride = nv * dv,
                                       .state = state,
                                       .state_stride = (int64_t)nv * dk * dv,
                                       .l2norm = true,
                                       .q_scale = 0.08838834764f};
        float rec = time_gdn(&a, -1, 5, st), v1 = time_gdn(&a, 1, 9, st);
        float v2 = time_gdn(&a, 2, 9, st), chk = v1 < v2 ? v1 : v2;
        int64_t toks = runs[r].seqs * runs[r].tok;
        char name[32];
        snprintf(name, sizeof name, "%d x %lld", runs[r].seqs, (long long)runs[r].tok);
        printf("%-14s %12.3f %12.3f %12.3f %7.1fx %14.0f %14.1f\n", name, rec, v1, v2, rec / chk,
               toks / (chk * 1e-3), 48.0 * chk);
    }
    CK(cudaFree(qkv));
    CK(cudaFree(g));
    CK(cudaFree(beta));
    CK(cudaFree(out));
    CK(cudaFree(state));
    CK(cudaStreamDestroy(st));
    return 0;
}
