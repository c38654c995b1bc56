/*
 * kernels/cuda_embed.cu — embedding lookup (see cuda_embed.h). A block per token walks its row,
 * so the table reads are contiguous.
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_embed.h"
#include "cuda_util.cuh"

template <typename TT, typename TO>
__global__ void embed_kernel(const TT *table, int64_t vocab, int64_t dim, const int32_t *ids,
                             TO *out, int64_t os)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int64_t t = blockIdx.x;
    int32_t id = ids[t];
    bool ok = id >= 0 && id < vocab;
    const TT *row = table + (ok ? (int64_t)id : 0) * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        cuda_from_f32(out + t * os + i, ok ? cuda_to_f32(row[i]) : 0.0f);
}

template <typename TT, typename TO>
static int embed_launch(const struct cuda_embed *a, cudaStream_t stream)
{
    CUDA_TRY(cuda_launch(embed_kernel<TT, TO>, (unsigned)a->n_tok, 256, 0, stream,
                         (const TT *)a->table, a->vocab, a->dim, a->ids, (TO *)a->out,
                         a->out_stride));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

template <typename TT> static int embed_out(const struct cuda_embed *a, cudaStream_t stream)
{
    return a->out_type == DTYPE_F32 ? embed_launch<TT, float>(a, stream)
                                    : embed_launch<TT, __nv_bfloat16>(a, stream);
}

extern "C" int cuda_embed(const struct cuda_embed *a, cudaStream_t stream)
{
    bool table_ok =
            a->table_type == DTYPE_F32 || a->table_type == DTYPE_F16 || a->table_type == DTYPE_BF16;
    if (!table_ok || (a->out_type != DTYPE_F32 && a->out_type != DTYPE_BF16) || a->vocab < 1 ||
        a->dim < 1 || a->n_tok < 0 || a->n_tok > INT32_MAX ||
        (a->n_tok > 1 && a->out_stride < a->dim) || !a->table || !a->ids || !a->out)
        return cuda_fail_args("cuda_embed", "table f32/f16/bf16, out f32/bf16, out_stride >= dim");
    if (a->n_tok == 0)
        return 0;
    switch (a->table_type) {
    case DTYPE_F32:
        return embed_out<float>(a, stream);
    case DTYPE_F16:
        return embed_out<__half>(a, stream);
    default:
        return embed_out<__nv_bfloat16>(a, stream);
    }
}
