/*
 * neuron/gdn.c — Gated DeltaNet math on the CPU (see gdn.h and QWEN35.md).
 *
 * The inner loops are axpy / dot products over rows of the state (v_dim floats, contiguous), so
 * they run on the vectorised cpu_ops kernels.
 */
#include "gdn.h"

#include "cpu_ops.h"
#include "xalloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void gdn_conv(float *x, int64_t n_tok, int64_t x_stride, int channels, float *state, const float *w,
              int kernel)
{
    int hist = kernel - 1;
    /* window = [state ; inputs]: row r holds the input of token r - hist */
    float *win = xmalloc(sizeof(float) * (size_t)(hist + n_tok) * (size_t)channels);
    memcpy(win, state, sizeof(float) * (size_t)hist * (size_t)channels);
    for (int64_t t = 0; t < n_tok; t++)
        memcpy(win + (hist + t) * channels, x + t * x_stride, sizeof(float) * (size_t)channels);
    for (int64_t t = 0; t < n_tok; t++) {
        float *y = x + t * x_stride;
        for (int c = 0; c < channels; c++) {
            float s = 0.0f;
            for (int j = 0; j < kernel; j++)
                s += w[c * kernel + j] * win[(t + j) * channels + c];
            y[c] = s;
        }
        cpu_silu(y, channels);
    }
    memcpy(state, win + n_tok * channels, sizeof(float) * (size_t)hist * (size_t)channels);
    free(win);
}

void gdn_l2norm(float *x, int n_heads, int dim, float scale)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * dim;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++)
            ss += v[i] * v[i];
        float r = scale / sqrtf(ss + 1e-6f);
        for (int i = 0; i < dim; i++)
            v[i] *= r;
    }
}

/* log(1 + e^x) without overflow for large x or loss for very negative x */
static float gdn_softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

void gdn_gates(const float *a, const float *b, const float *neg_a, const float *dt_bias,
               int n_v_heads, float *g, float *beta)
{
    for (int h = 0; h < n_v_heads; h++) {
        beta[h] = 1.0f / (1.0f + expf(-b[h]));
        g[h] = neg_a[h] * gdn_softplus(a[h] + dt_bias[h]);
    }
}

void gdn_gated_norm(float *o, const float *z, const float *w, int dim, float eps)
{
    float ss = 0.0f;
    for (int i = 0; i < dim; i++)
        ss += o[i] * o[i];
    float r = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = 0; i < dim; i++)
        o[i] = w[i] * (o[i] * r) * (z[i] / (1.0f + expf(-z[i])));
}

void gdn_head_recurrent(const struct gdn_head *h)
{
    int dk = h->k_dim, dv = h->v_dim;
    float *S = h->state;
    float *delta = xmalloc(sizeof(float) * (size_t)dv);
    for (int64_t t = 0; t < h->n_tok; t++) {
        const float *q = h->q + t * h->qk_stride, *k = h->k + t * h->qk_stride;
        const float *v = h->v + t * h->v_stride;
        float alpha = expf(h->g[t * h->gb_stride]), beta = h->beta[t * h->gb_stride];
        float *o = h->out + t * h->out_stride;
        /* delta = beta (v - alpha S^T k), computed before S is touched */
        memset(delta, 0, sizeof(float) * (size_t)dv);
        for (int i = 0; i < dk; i++)
            cpu_axpy_f32(delta, k[i], S + (size_t)i * dv, dv);
        for (int j = 0; j < dv; j++)
            delta[j] = beta * (v[j] - alpha * delta[j]);
        /* S <- alpha S + k delta^T; o = S^T q */
        memset(o, 0, sizeof(float) * (size_t)dv);
        for (int i = 0; i < dk; i++) {
            float *row = S + (size_t)i * dv;
            for (int j = 0; j < dv; j++)
                row[j] *= alpha;
            cpu_axpy_f32(row, k[i], delta, dv);
            cpu_axpy_f32(o, q[i], row, dv);
        }
    }
    free(delta);
}

/* One chunk of L tokens: see QWEN35.md. Gamma is the running sum of g inside the chunk; only
 * differences Gamma_r - Gamma_s with s <= r are exponentiated (never exp(-Gamma) alone). */
static void gdn_chunk(const struct gdn_head *h, int64_t t0, int L, float *gam, float *A, float *W,
                      float *Vn)
{
    int dk = h->k_dim, dv = h->v_dim;
    float *S = h->state;
#define Q(r)    (h->q + (t0 + (r)) * h->qk_stride)
#define K(r)    (h->k + (t0 + (r)) * h->qk_stride)
#define V(r)    (h->v + (t0 + (r)) * h->v_stride)
#define G(r)    (h->g[(t0 + (r)) * h->gb_stride])
#define BETA(r) (h->beta[(t0 + (r)) * h->gb_stride])

    float acc = 0.0f;
    for (int r = 0; r < L; r++) {
        acc += G(r);
        gam[r] = acc;
    }
    /* A_rs = beta_r (k_r . k_s) exp(Gamma_r - Gamma_s), s < r */
    for (int r = 0; r < L; r++)
        for (int s = 0; s < r; s++)
            A[r * L + s] = BETA(r) * cpu_dot_f32(K(r), K(s), dk) * expf(gam[r] - gam[s]);
    /* forward substitution of (I + A) [W | U] = [diag(beta e^Gamma) K | diag(beta) V] */
    for (int r = 0; r < L; r++) {
        float *w = W + (size_t)r * dk, *u = Vn + (size_t)r * dv;
        float be = BETA(r) * expf(gam[r]);
        for (int i = 0; i < dk; i++)
            w[i] = be * K(r)[i];
        for (int j = 0; j < dv; j++)
            u[j] = BETA(r) * V(r)[j];
        for (int s = 0; s < r; s++) {
            cpu_axpy_f32(w, -A[r * L + s], W + (size_t)s * dk, dk);
            cpu_axpy_f32(u, -A[r * L + s], Vn + (size_t)s * dv, dv);
        }
    }
    /* V_new = U - W S0 */
    for (int r = 0; r < L; r++)
        for (int i = 0; i < dk; i++)
            cpu_axpy_f32(Vn + (size_t)r * dv, -W[(size_t)r * dk + i], S + (size_t)i * dv, dv);
    /* O_r = e^Gamma_r q_r^T S0 + sum_{s <= r} (q_r . k_s) e^(Gamma_r - Gamma_s) V_new_s */
    for (int r = 0; r < L; r++) {
        float *o = h->out + (t0 + r) * h->out_stride;
        memset(o, 0, sizeof(float) * (size_t)dv);
        float e = expf(gam[r]);
        for (int i = 0; i < dk; i++)
            cpu_axpy_f32(o, e * Q(r)[i], S + (size_t)i * dv, dv);
        for (int s = 0; s <= r; s++)
            cpu_axpy_f32(o, cpu_dot_f32(Q(r), K(s), dk) * expf(gam[r] - gam[s]),
                         Vn + (size_t)s * dv, dv);
    }
    /* S = e^Gamma_L S0 + sum_s e^(Gamma_L - Gamma_s) k_s V_new_s^T */
    float eL = expf(gam[L - 1]);
    for (int i = 0; i < dk; i++) {
        float *row = S + (size_t)i * dv;
        for (int j = 0; j < dv; j++)
            row[j] *= eL;
        for (int s = 0; s < L; s++)
            cpu_axpy_f32(row, expf(gam[L - 1] - gam[s]) * K(s)[i], Vn + (size_t)s * dv, dv);
    }
#undef Q
#undef K
#undef V
#undef G
#undef BETA
}

void gdn_head_chunked(const struct gdn_head *h, int chunk)
{
    if (chunk < 1)
        chunk = GDN_CHUNK;
    float *gam = xmalloc(sizeof(float) * (size_t)chunk);
    float *A = xmalloc(sizeof(float) * (size_t)chunk * (size_t)chunk);
    float *W = xmalloc(sizeof(float) * (size_t)chunk * (size_t)h->k_dim);
    float *Vn = xmalloc(sizeof(float) * (size_t)chunk * (size_t)h->v_dim);
    for (int64_t t0 = 0; t0 < h->n_tok; t0 += chunk) {
        int L = h->n_tok - t0 < chunk ? (int)(h->n_tok - t0) : chunk;
        gdn_chunk(h, t0, L, gam, A, W, Vn);
    }
    free(gam);
    free(A);
    free(W);
    free(Vn);
}
