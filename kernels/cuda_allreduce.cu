/*
 * kernels/cuda_allreduce.cu — one-shot all-reduce over peer memory (see cuda_allreduce.h).
 *
 * One launch of AR_BLOCKS blocks per rank and call. Block b of every rank owns the same
 * elements (a grid-stride over x that depends only on n). It copies them into the rank's
 * staging buffer of the call's parity, then one thread per peer writes the call's sequence
 * value into that peer's flag [parity][b][this rank] (a release store at system scope, after
 * the block's barrier, so the copies are visible first) and waits for the peer's flag
 * [parity][b][peer] in this rank's own memory (acquire loads of local memory: the spin costs no
 * NVLink traffic). Then every thread sums its elements over the ranks' staging buffers in rank
 * order, reading the peers' over NVLink, and writes x.
 *
 * Why this is safe across calls and graph replays: each block keeps its call count in device
 * memory (seq[b], read at the start, written back at the end by the block itself), so a
 * replayed graph uses the next value, and every rank's seq[b] moves in step because the grid is
 * fixed and every rank makes the same calls. The staging buffers and flags alternate with the
 * parity of the count. A rank starts call k + 1 only after its call k, in which it saw every
 * peer's call-k flag; a peer sets that flag only after finishing its call k - 1, the last one
 * that read this rank's buffer of call k + 1's parity. So no rank overwrites what a peer still
 * reads, and a flag is never overwritten before its reader saw it.
 */
#include "cuda_allreduce.h"
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_util.cuh"

#include <stdlib.h>

/* Fixed, so that every call advances every block's sequence value. 64 blocks of 512 threads
 * cover 128 KB per pass (a batch-8 decode message of the 27B shape in one pass), and a
 * batch-1 message of 20 KB uses the first three blocks' threads. */
#define AR_BLOCKS  64
#define AR_THREADS 512
/* Spin iterations between looks at the abort flag (a read of host memory, ~1 us). */
#define AR_ABORT_POLL 256

struct cuda_allreduce {
    int n_ranks;
    int devices[CUDA_ALLREDUCE_MAX_RANKS];
    int64_t cap;                               /* floats per staging buffer, a multiple of 4 */
    float *data[CUDA_ALLREDUCE_MAX_RANKS];     /* rank r: [2][cap] on devices[r] */
    unsigned *flags[CUDA_ALLREDUCE_MAX_RANKS]; /* rank r: [2][AR_BLOCKS][MAX_RANKS] */
    unsigned *seq[CUDA_ALLREDUCE_MAX_RANKS];   /* rank r: [AR_BLOCKS] */
    volatile int *abort_flag;                  /* pinned, mapped: read by every kernel */
    int aborted;                               /* host side, atomic */
};

struct ar_args {
    float *x;
    int64_t n, cap;
    int rank, n_ranks;
    const float *data[CUDA_ALLREDUCE_MAX_RANKS];
    unsigned *flags[CUDA_ALLREDUCE_MAX_RANKS];
    unsigned *seq;
    const volatile int *abort_flag;
};

__device__ __forceinline__ void ar_store_release(unsigned *p, unsigned v)
{
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ unsigned ar_load_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void ar_add4(float4 &a, float4 v)
{
    a.x += v.x;
    a.y += v.y;
    a.z += v.z;
    a.w += v.w;
}

/* N = a.n_ranks, a template argument so the loops over ranks unroll and the pointer tables
 * stay in registers. */
template <int N> __global__ void __launch_bounds__(AR_THREADS) ar_kernel(struct ar_args a)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    __shared__ unsigned s_seq;
    __shared__ int s_abort;
    int b = blockIdx.x, t = threadIdx.x;
    if (t == 0) {
        s_seq = a.seq[b] + 1u;
        s_abort = 0;
    }
    __syncthreads();
    unsigned seq = s_seq;
    int par = (int)(seq & 1u);
    float *mine = (float *)a.data[a.rank] + (int64_t)par * a.cap;
    bool vec = ((uintptr_t)a.x & 15u) == 0;
    int64_t n4 = vec ? a.n / 4 : 0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x, t0 = (int64_t)b * blockDim.x + t;
    for (int64_t i = t0; i < n4; i += stride)
        ((float4 *)mine)[i] = ((const float4 *)a.x)[i];
    for (int64_t i = n4 * 4 + t0; i < a.n; i += stride)
        mine[i] = a.x[i];
    __syncthreads();
    if (t < N && t != a.rank) {
        int64_t slot = ((int64_t)par * AR_BLOCKS + b) * CUDA_ALLREDUCE_MAX_RANKS;
        ar_store_release(a.flags[t] + slot + a.rank, seq);
        const unsigned *w = a.flags[a.rank] + slot + t;
        for (unsigned it = 1; (int)(ar_load_acquire(w) - seq) < 0; it++)
            if (it % AR_ABORT_POLL == 0 && *a.abort_flag) {
                s_abort = 1;
                break;
            }
    }
    __syncthreads();
    if (s_abort)
        return; /* the group is dead: x stays this rank's partial */
    const float *src[N];
#pragma unroll
    for (int r = 0; r < N; r++)
        src[r] = a.data[r] + (int64_t)par * a.cap;
    for (int64_t i = t0; i < n4; i += stride) {
        float4 own = ((const float4 *)a.x)[i], v[N];
#pragma unroll
        for (int r = 0; r < N; r++) /* all loads in flight before the first add */
            v[r] = r == a.rank ? own : __ldcv((const float4 *)src[r] + i);
        float4 acc = v[0];
#pragma unroll
        for (int r = 1; r < N; r++)
            ar_add4(acc, v[r]);
        ((float4 *)a.x)[i] = acc;
    }
    for (int64_t i = n4 * 4 + t0; i < a.n; i += stride) {
        float own = a.x[i], acc = a.rank == 0 ? own : __ldcv(src[0] + i);
#pragma unroll
        for (int r = 1; r < N; r++)
            acc += r == a.rank ? own : __ldcv(src[r] + i);
        a.x[i] = acc;
    }
    if (t == 0)
        a.seq[b] = seq;
}

/* Frees what create made so far on each device (device memory is freed from any device). */
static void ar_free(struct cuda_allreduce *ar)
{
    for (int r = 0; r < ar->n_ranks; r++) {
        cudaFree(ar->data[r]);
        cudaFree(ar->flags[r]);
        cudaFree(ar->seq[r]);
    }
    if (ar->abort_flag)
        cudaFreeHost((void *)ar->abort_flag);
    free(ar);
}

static int ar_setup(struct cuda_allreduce *ar)
{
    size_t flag_bytes = sizeof(unsigned) * 2 * AR_BLOCKS * CUDA_ALLREDUCE_MAX_RANKS;
    void *host = NULL;
    CUDA_TRY(cudaHostAlloc(&host, sizeof(int), cudaHostAllocPortable | cudaHostAllocMapped));
    ar->abort_flag = (volatile int *)host;
    *ar->abort_flag = 0;
    for (int r = 0; r < ar->n_ranks; r++) {
        CUDA_TRY(cudaSetDevice(ar->devices[r]));
        for (int q = 0; q < ar->n_ranks; q++) {
            if (q == r)
                continue;
            int ok = 0;
            CUDA_TRY(cudaDeviceCanAccessPeer(&ok, ar->devices[r], ar->devices[q]));
            if (!ok)
                return cuda_fail_args("cuda_allreduce_create", "no peer access between the GPUs");
            cudaError_t e = cudaDeviceEnablePeerAccess(ar->devices[q], 0);
            if (e == cudaErrorPeerAccessAlreadyEnabled)
                (void)cudaGetLastError(); /* enabled by NCCL or an earlier group: fine */
            else
                CUDA_TRY(e);
        }
        CUDA_TRY(cudaMalloc((void **)&ar->data[r], sizeof(float) * 2 * (size_t)ar->cap));
        CUDA_TRY(cudaMalloc((void **)&ar->flags[r], flag_bytes));
        CUDA_TRY(cudaMalloc((void **)&ar->seq[r], sizeof(unsigned) * AR_BLOCKS));
        CUDA_TRY(cudaMemset(ar->flags[r], 0, flag_bytes));
        CUDA_TRY(cudaMemset(ar->seq[r], 0, sizeof(unsigned) * AR_BLOCKS));
        /* the callers' streams may not wait for the legacy stream */
        CUDA_TRY(cudaDeviceSynchronize());
    }
    return 0;
}

extern "C" int cuda_allreduce_create(int n_ranks, const int *devices, int64_t max_elems,
                                     struct cuda_allreduce **out)
{
    *out = NULL;
    if (n_ranks < 2 || n_ranks > CUDA_ALLREDUCE_MAX_RANKS || !devices || max_elems < 1)
        return cuda_fail_args("cuda_allreduce_create", "2..8 ranks, max_elems >= 1");
    for (int r = 0; r < n_ranks; r++)
        for (int q = 0; q < r; q++)
            if (devices[r] == devices[q])
                return cuda_fail_args("cuda_allreduce_create", "a device appears twice");
    int prev = 0;
    CUDA_TRY(cudaGetDevice(&prev));
    struct cuda_allreduce *ar = (struct cuda_allreduce *)calloc(1, sizeof(*ar));
    if (!ar)
        abort(); /* out of memory: the project's policy (common/xalloc.h) */
    ar->n_ranks = n_ranks;
    ar->cap = (max_elems + 3) / 4 * 4;
    for (int r = 0; r < n_ranks; r++)
        ar->devices[r] = devices[r];
    int rc = ar_setup(ar);
    cudaSetDevice(prev);
    if (rc) {
        ar_free(ar);
        return -1;
    }
    *out = ar;
    return 0;
}

extern "C" void cuda_allreduce_destroy(struct cuda_allreduce *ar)
{
    if (ar)
        ar_free(ar);
}

extern "C" int64_t cuda_allreduce_max_elems(const struct cuda_allreduce *ar)
{
    return ar->cap;
}

extern "C" int cuda_allreduce_sum(struct cuda_allreduce *ar, int rank, float *x, int64_t n,
                                  cudaStream_t stream)
{
    if (!ar || rank < 0 || rank >= ar->n_ranks || n < 0 || n > ar->cap || (n > 0 && !x) ||
        ((uintptr_t)x & 3u))
        return cuda_fail_args("cuda_allreduce_sum", "rank in the group, 0 <= n <= max_elems");
    if (__atomic_load_n(&ar->aborted, __ATOMIC_ACQUIRE))
        return cuda_fail_args("cuda_allreduce_sum", "the group was aborted");
    if (n == 0)
        return 0; /* every rank skips alike: the sequence values stay in step */
    struct ar_args a = {};
    a.x = x;
    a.n = n;
    a.cap = ar->cap;
    a.rank = rank;
    a.n_ranks = ar->n_ranks;
    for (int r = 0; r < ar->n_ranks; r++) {
        a.data[r] = ar->data[r];
        a.flags[r] = ar->flags[r];
    }
    a.seq = ar->seq[rank];
    a.abort_flag = ar->abort_flag;
    cudaError_t err;
    switch (ar->n_ranks) {
    case 2:
        err = cuda_launch(ar_kernel<2>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    case 3:
        err = cuda_launch(ar_kernel<3>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    case 4:
        err = cuda_launch(ar_kernel<4>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    case 5:
        err = cuda_launch(ar_kernel<5>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    case 6:
        err = cuda_launch(ar_kernel<6>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    case 7:
        err = cuda_launch(ar_kernel<7>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    default:
        err = cuda_launch(ar_kernel<8>, AR_BLOCKS, AR_THREADS, 0, stream, a);
        break;
    }
    CUDA_TRY(err);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" void cuda_allreduce_abort(struct cuda_allreduce *ar)
{
    if (!ar)
        return;
    __atomic_store_n(&ar->aborted, 1, __ATOMIC_RELEASE);
    *ar->abort_flag = 1;
}

extern "C" bool cuda_allreduce_aborted(const struct cuda_allreduce *ar)
{
    return ar && __atomic_load_n(&ar->aborted, __ATOMIC_ACQUIRE);
}
