/* kernels_transformer.c: layer normalisation and fused attention (cpu target).
 *
 * GELU is not here: it is an elementwise op and a GEMM epilogue activation (lw_gelu, kernels_common.h).
 */

/* LayerNormalization of one contiguous row: one pass for the mean and variance (sums of x - x[0], which
 * keeps the variance accurate when the mean is large against the spread), one to normalise. */
static inline void lw_layernorm_row(const float *x, const float *scale, const float *bias, float *y, long n,
                                    float eps, float *mean, float *inv_std) {
    const float x0 = x[0];
    lw_vf vs = (lw_vf){0}, vq = (lw_vf){0};
    long a = 0;
    for (; a + LW_VEC <= n; a += LW_VEC) {
        lw_vf d = lw_load(x + a) - x0;
        vs += d;
        vq += d * d;
    }
    float s = 0.0f, q = 0.0f;
    for (int i = 0; i < LW_VEC; i++) { s += vs[i]; q += vq[i]; }
    for (; a < n; a++) { float d = x[a] - x0; s += d; q += d * d; }
    const float shift = s / (float)n;
    float var = q / (float)n - shift * shift;
    var = var < 0.0f ? 0.0f : var;
    const float inv = 1.0f / sqrtf(var + eps);
    if (mean) *mean = x0 + shift;
    if (inv_std) *inv_std = inv;
    /* x - mean as (x - x0) - shift: x0 + shift would round to x0's precision */
    if (bias)
        for (a = 0; a < n; a++) y[a] = ((x[a] - x0) - shift) * inv * scale[a] + bias[a];
    else
        for (a = 0; a < n; a++) y[a] = ((x[a] - x0) - shift) * inv * scale[a];
}

/* LayerNormalization over the last ``cols`` elements of ``rows`` rows; scale and bias (may be NULL) hold
 * ``cols`` floats. Rows run in parallel. */
static void lw_layernorm(int nt, const float *x, const float *scale, const float *bias, float *y, long rows,
                         long cols, float eps) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows > 1 && rows * cols > 16384)
    for (long r = 0; r < rows; r++)
        lw_layernorm_row(x + r * cols, scale, bias, y + r * cols, cols, eps, NULL, NULL);
}

/* lw_layernorm that also writes the optional outputs Mean and InvStdDev (one float per row each; either
 * may be NULL when the graph does not use it). */
static void lw_layernorm_stats(int nt, const float *x, const float *scale, const float *bias, float *y,
                               float *mean, float *inv_std, long rows, long cols, float eps) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows > 1 && rows * cols > 16384)
    for (long r = 0; r < rows; r++)
        lw_layernorm_row(x + r * cols, scale, bias, y + r * cols, cols, eps, mean ? mean + r : NULL,
                         inv_std ? inv_std + r : NULL);
}

/* Fused attention: Y = softmax(scale * Q K^T (masked)) V for every (batch b, head h). Each operand is
 * addressed through element strides, so the kernel reads Q, K and V straight from the [B, S, H, D] layout
 * of the projection GEMMs (or any slice of it) and writes Y in [B, S, H, Dv] order when the graph wants
 * that: the head split/merge transposes need not be materialised. Q, V and Y rows are contiguous along
 * the head dimension (stride 1); K is either (k_stride[3] == 1: rows of K) or along keys (k_stride[2] ==
 * 1: rows of K^T). The masks are addressed by their strides along (b, h, q, k), zero where they
 * broadcast.
 *
 * Phase 1 packs K^T of every (b, h) into the workspace, zero-padded to [D][Skp] (Skp = Sk rounded up to
 * a vector), and V too when its rows are not whole vectors ([Sk][Dvp]). Phase 2 runs tasks of up to
 * LW_ATTN_ROWS query rows: scores by a register-tiled micro-GEMM over the head size, softmax (exp
 * vectorised; keys a row does not see are -inf), then P V by the same micro-GEMM over the keys, each row
 * scaled by 1 / sum at the store. Every row is computed the same way whatever the task split and the
 * thread count, so results do not depend on either. */
typedef struct {
    long B, H, Sq, Sk, D, Dv;
    int causal, nan_to_zero;
    float scale, mask_fill;
    long mask_stride[4], bool_stride[4];
    long q_stride[3], k_stride[4], v_stride[3], y_stride[3]; /* (b, h, s) and for K (b, h, key, d) */
    long kv_group; /* query heads per K/V head (grouped-query attention): head h reads K/V head h / kv_group */
} lw_attention_geom;

/* Query rows per micro-tile: each K^T (and V) vector loaded serves this many rows (the GEMM tile height). */
#define LW_ATTN_ROWS LW_MR
/* Micro-tiles per task at most: a task sweeps each K^T / V panel over all its tiles while it is in L1. */
#define LW_ATTN_TILES 4

/* One LW_ATTN_ROWS x NV-vector tile of c = a b over K: rows of a at AR[r] (element k at AR[r][k]), b
 * vectors at BPTR + k * LDB + u * LW_VEC; STORE runs with acc[r][u] in registers. */
#define LW_ATTN_TILE(NV, AR, BPTR, LDB, K, STORE)                                              \
    do {                                                                                       \
        lw_vf acc[LW_ATTN_ROWS][NV];                                                           \
        for (int r = 0; r < LW_ATTN_ROWS; r++)                                                 \
            for (int u = 0; u < NV; u++) acc[r][u] = (lw_vf){0};                               \
        _Pragma("GCC unroll 4")                                                                \
        for (long k = 0; k < (K); k++) {                                                       \
            lw_vf bv[NV];                                                                      \
            for (int u = 0; u < NV; u++) bv[u] = lw_load((BPTR) + k * (LDB) + u * LW_VEC);     \
            for (int r = 0; r < LW_ATTN_ROWS; r++) {                                           \
                const lw_vf ak = lw_splat((AR)[r][k]);                                         \
                for (int u = 0; u < NV; u++) acc[r][u] += ak * bv[u];                          \
            }                                                                                  \
        }                                                                                      \
        STORE;                                                                                 \
    } while (0)

/* Scores of a task's micro-tiles: tile m (rows ar[m * LW_ATTN_ROWS + r], rows[m] of them stored, the
 * missing ones repeating the last) gets s[row][j] = scale * sum_k a[row][k] b[k][j] for j < npad[m], a
 * whole number of vectors (b: the packed, zero-padded K^T, K = head size). Panel-outer: each b panel is
 * loaded into L1 once for all tiles. */
static void lw_attention_qk(const float *const *ar, const long *rows, const long *npad, long tiles,
                            const float *b, long ldb, long K, float scale, float *s, long lds) {
    long N = 0;
    for (long m = 0; m < tiles; m++) N = LW_MAX(N, npad[m]);
    for (long j = 0; j < N; j += 2 * LW_VEC)
        for (long m = 0; m < tiles; m++) {
            const float *const *am = ar + m * LW_ATTN_ROWS;
            float *sm = s + m * LW_ATTN_ROWS * lds;
            if (j + 2 * LW_VEC <= npad[m])
                LW_ATTN_TILE(2, am, b + j, ldb, K, for (long r = 0; r < rows[m]; r++) {
                    lw_store(sm + r * lds + j, acc[r][0] * scale);
                    lw_store(sm + r * lds + j + LW_VEC, acc[r][1] * scale);
                });
            else if (j < npad[m])
                LW_ATTN_TILE(1, am, b + j, ldb, K, for (long r = 0; r < rows[m]; r++)
                    lw_store(sm + r * lds + j, acc[r][0] * scale));
        }
}

/* Outputs of a task's micro-tiles: y[row][c] = inv[row] * sum_{k < nmax[m]} p[row][k] b[k][c] for c < N
 * (b: V, rows ldb apart, whole vectors up to Npad >= N; the last vector is stored partially when N is not
 * a whole number of them). */
static void lw_attention_pv(const float *const *ar, const long *rows, const long *nmax, long tiles,
                            const float *b, long ldb, long N, long Npad, const float *inv, float *y,
                            long ldy) {
    for (long j = 0; j < Npad; j += 2 * LW_VEC)
        for (long m = 0; m < tiles; m++) {
            const float *const *am = ar + m * LW_ATTN_ROWS;
            const float *im = inv + m * LW_ATTN_ROWS;
            float *ym = y + m * LW_ATTN_ROWS * ldy;
            if (j + 2 * LW_VEC <= N)
                LW_ATTN_TILE(2, am, b + j, ldb, nmax[m], for (long r = 0; r < rows[m]; r++) {
                    lw_store(ym + r * ldy + j, acc[r][0] * im[r]);
                    lw_store(ym + r * ldy + j + LW_VEC, acc[r][1] * im[r]);
                });
            else
                for (long jj = j; jj < LW_MIN(j + 2 * LW_VEC, Npad); jj += LW_VEC)
                    LW_ATTN_TILE(1, am, b + jj, ldb, nmax[m], for (long r = 0; r < rows[m]; r++) {
                        const lw_vf out = acc[r][0] * im[r];
                        if (jj + LW_VEC <= N) lw_store(ym + r * ldy + jj, out);
                        else for (long u = 0; u < N - jj; u++) ym[r * ldy + jj + u] = out[u];
                    });
        }
}

/* exp(x) for x in [-inf, 0] (NaN gives NaN): lw_vexpf's range reduction (x = n ln 2 + r, |r| <= ln 2 / 2, x
 * clamped at -87 and the result zeroed below it, 2^n built from t's bits) with a shorter polynomial,
 * e^r = 1 + r (c4 + r (c3 + ...)) of degree 5 (minimax, relative error 1.2e-7, Arm's optimized-routines
 * expf) evaluated in Estrin's form: fewer operations and a shorter dependency chain than lw_vexpf's. */
static inline lw_vf lw_attention_exp(lw_vf x) {
    const lw_vf lo = lw_splat(-87.0f), round = lw_splat(12582912.0f); /* 1.5 * 2^23 */
    const lw_vi under = (lw_vi)(x < lo);
    const lw_vf xc = lw_vmax(lo, x); /* max(lo, x): NaN stays NaN */
    const lw_vf t = xc * 1.44269504088896341f + round; /* round(x log2 e) in the low mantissa bits */
    const lw_vf n = t - round;
    const lw_vf r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    const lw_vf r2 = r * r;
    const lw_vf p = r * 0x1.0e4020p-7f + 0x1.573e2ep-5f;
    lw_vf q = r * 0x1.555e66p-3f + 0x1.fffdb6p-2f;
    q = p * r2 + q;
    const lw_vf poly = q * r2 + r * 0x1.ffffecp-1f; /* e^r - 1 */
    const lw_vf scale = (lw_vf)(((lw_vi)t - (0x4B400000 - 127)) << 23); /* 2^n, n in [-126, 0] */
    return (lw_vf)((lw_vi)(poly * scale + scale) & ~under);
}

/* The largest lane of v (no NaN lanes) and the sum of its lanes, as a tree where AVX-512 has one (a row's
 * sequential scalar reduction costs as much as a few vectors of its exponentials). */
static inline float lw_attention_hmax(lw_vf v) {
#if LW_VEC == 16 && defined(__AVX512F__)
    return _mm512_reduce_max_ps((__m512)v);
#else
    float m = v[0];
    for (int l = 1; l < LW_VEC; l++) m = v[l] > m ? v[l] : m;
    return m;
#endif
}

static inline float lw_attention_hsum(lw_vf v) {
#if LW_VEC == 16 && defined(__AVX512F__)
    return _mm512_reduce_add_ps((__m512)v);
#else
    float s = 0.0f;
    for (int l = 0; l < LW_VEC; l++) s += v[l];
    return s;
#endif
}

/* Mask and exponentiate one row of scaled scores in place: s[j] = exp(x[j] - max) for j < n (x the
 * masked score) and 0 for n <= j < npad (npad a whole number of vectors); returns 1 / sum. The max runs
 * on four independent vectors and the sum on two (a row's chain of dependent operations, not the
 * arithmetic, bounds these passes). The max skips NaN scores; lw_attention_exp turns them into NaN, so a
 * row with a NaN score sums to NaN and is NaN, as the softmax gives it. Infinite maxima (a +inf score,
 * or every score -inf) take the general exp. When nan_to_zero meets a NaN sum (every probability NaN,
 * which the guard turns to 0) the row becomes zeros. */
static float lw_attention_softmax_row(const lw_attention_geom *g, float *s, long n, long npad,
                                      const float *mask, const uint8_t *bmask) {
    const long mk = g->mask_stride[3], bk = g->bool_stride[3];
    if (bmask)
        for (long j = 0; j < n; j++) s[j] = bmask[j * bk] ? s[j] : g->mask_fill;
    if (mask && mk != 1)
        for (long j = 0; j < n; j++) s[j] += mask[j * mk];
    for (long j = n; j < npad; j++) s[j] = -INFINITY;
    if (mask && mk == 1) {
        long j = 0;
        for (; j + LW_VEC <= n; j += LW_VEC) lw_store(s + j, lw_load(s + j) + lw_load(mask + j));
        for (; j < n; j++) s[j] += mask[j];
    }
    lw_vf vm[4] = {lw_splat(-INFINITY), lw_splat(-INFINITY), lw_splat(-INFINITY), lw_splat(-INFINITY)};
    long j = 0;
    for (; j + 4 * LW_VEC <= npad; j += 4 * LW_VEC)
        for (int u = 0; u < 4; u++) vm[u] = lw_vmax(lw_load(s + j + u * LW_VEC), vm[u]);
    for (; j < npad; j += LW_VEC) vm[0] = lw_vmax(lw_load(s + j), vm[0]);
    const float m = lw_attention_hmax(lw_vmax(lw_vmax(vm[0], vm[1]), lw_vmax(vm[2], vm[3])));
    const lw_vf vmax = lw_splat(m);
    lw_vf vs[2] = {(lw_vf){0}, (lw_vf){0}};
    if (m > -INFINITY && m < INFINITY) { /* every s - max in [-inf, 0], or NaN */
        for (j = 0; j + 2 * LW_VEC <= npad; j += 2 * LW_VEC)
            for (int u = 0; u < 2; u++) {
                const lw_vf e = lw_attention_exp(lw_load(s + j + u * LW_VEC) - vmax);
                lw_store(s + j + u * LW_VEC, e);
                vs[u] += e;
            }
        if (j < npad) {
            const lw_vf e = lw_attention_exp(lw_load(s + j) - vmax);
            lw_store(s + j, e);
            vs[0] += e;
        }
    } else { /* infinite scores: the general exp, NaN where the softmax gives NaN */
        for (j = 0; j < npad; j += LW_VEC) {
            const lw_vf e = lw_vexpf(lw_load(s + j) - vmax);
            lw_store(s + j, e);
            vs[0] += e;
        }
    }
    const float sum = lw_attention_hsum(vs[0] + vs[1]);
    if (g->nan_to_zero && sum != sum) {
        for (j = 0; j < npad; j++) s[j] = 0.0f;
        return 0.0f;
    }
    return 1.0f / sum;
}

static void lw_attention(int nt, const lw_attention_geom *g, const float *q, const float *k, const float *v,
                         const float *mask, const uint8_t *bmask, float *y, float *ws) {
    const long B = g->B, H = g->H, Sq = g->Sq, Sk = g->Sk, D = g->D, Dv = g->Dv;
    const long Skp = LW_CDIV(Sk, LW_VEC) * LW_VEC, Dvp = LW_CDIV(Dv, LW_VEC) * LW_VEC;
    const int pack_v = Dv % LW_VEC != 0;
    float *kt = ws, *vp = ws + B * H * D * Skp;
    /* micro-tiles per task: up to LW_ATTN_TILES while their scores fit in 64 KiB (one tile always) and
     * there are tasks enough for the threads; every row is computed the same way whatever the split */
    const long max_scores = LW_MAX(16384, LW_ATTN_ROWS * Skp);
    long per_task = LW_MAX(1, LW_MIN(LW_ATTN_TILES, max_scores / (LW_ATTN_ROWS * Skp)));
    while (per_task > 1 && B * H * LW_CDIV(Sq, per_task * LW_ATTN_ROWS) < 4 * nt) per_task--;
    const long rows_per_task = per_task * LW_ATTN_ROWS, blocks = LW_CDIV(Sq, rows_per_task);
    const long tasks = B * H * blocks;
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks > 1)
    {
#pragma omp for schedule(static)
        for (long bh = 0; bh < B * H; bh++) {
            const long b = bh / H, h = bh % H;
            const float *kb = k + b * g->k_stride[0] + (h / g->kv_group) * g->k_stride[1];
            float *kd = kt + bh * D * Skp;
            if (g->k_stride[2] == 1) { /* rows of K^T */
                for (long d = 0; d < D; d++) {
                    memcpy(kd + d * Skp, kb + d * g->k_stride[3], (size_t)Sk * sizeof(float));
                    for (long j = Sk; j < Skp; j++) kd[d * Skp + j] = 0.0f;
                }
            } else { /* rows of K: transpose, LW_VEC keys at a time */
                const long ks = g->k_stride[2], kdst = g->k_stride[3];
                for (long j0 = 0; j0 < Skp; j0 += LW_VEC)
                    for (long d = 0; d < D; d++)
                        for (long u = 0; u < LW_VEC; u++)
                            kd[d * Skp + j0 + u] = j0 + u < Sk ? kb[(j0 + u) * ks + d * kdst] : 0.0f;
            }
            if (pack_v) {
                const float *vb = v + b * g->v_stride[0] + (h / g->kv_group) * g->v_stride[1];
                float *vd = vp + bh * Sk * Dvp;
                for (long j = 0; j < Sk; j++)
                    for (long c = 0; c < Dvp; c++) vd[j * Dvp + c] = c < Dv ? vb[j * g->v_stride[2] + c] : 0.0f;
            }
        }
#pragma omp for schedule(static)
        for (long t = 0; t < tasks; t++) {
            const long bh = t / blocks, b = bh / H, h = bh % H, i0 = (t % blocks) * rows_per_task;
            const long tiles = LW_CDIV(LW_MIN(rows_per_task, Sq - i0), LW_ATTN_ROWS);
            float s[tiles * LW_ATTN_ROWS * Skp]; /* at most max_scores floats */
            float inv[LW_ATTN_TILES * LW_ATTN_ROWS];
            const float *ar[LW_ATTN_TILES * LW_ATTN_ROWS];
            long rows[LW_ATTN_TILES], nmax[LW_ATTN_TILES], npad[LW_ATTN_TILES];
            const float *qb = q + b * g->q_stride[0] + h * g->q_stride[1];
            for (long m = 0; m < tiles; m++) {
                const long m0 = i0 + m * LW_ATTN_ROWS;
                rows[m] = LW_MIN(LW_ATTN_ROWS, Sq - m0);
                /* causal: key j is seen by query i when j <= i + Sk - Sq (the tile's last row sees most) */
                nmax[m] = g->causal ? LW_MAX(0, LW_MIN(Sk, m0 + rows[m] + Sk - Sq)) : Sk;
                npad[m] = LW_CDIV(nmax[m], LW_VEC) * LW_VEC;
                for (int r = 0; r < LW_ATTN_ROWS; r++)
                    ar[m * LW_ATTN_ROWS + r] = qb + (m0 + LW_MIN(r, rows[m] - 1)) * g->q_stride[2];
            }
            lw_attention_qk(ar, rows, npad, tiles, kt + bh * D * Skp, Skp, D, g->scale, s, Skp);
            for (long m = 0; m < tiles; m++)
                for (long r = 0; r < rows[m]; r++) {
                    const long row = m * LW_ATTN_ROWS + r, i = i0 + row;
                    const long n = g->causal ? LW_MAX(0, LW_MIN(Sk, i + Sk - Sq + 1)) : Sk;
                    const float *mr = mask ? mask + b * g->mask_stride[0] + h * g->mask_stride[1]
                                                 + i * g->mask_stride[2] : NULL;
                    const uint8_t *br = bmask ? bmask + b * g->bool_stride[0] + h * g->bool_stride[1]
                                                      + i * g->bool_stride[2] : NULL;
                    inv[row] = lw_attention_softmax_row(g, s + row * Skp, n, npad[m], mr, br);
                }
            for (long m = 0; m < tiles; m++)
                for (int r = 0; r < LW_ATTN_ROWS; r++)
                    ar[m * LW_ATTN_ROWS + r] = s + (m * LW_ATTN_ROWS + LW_MIN(r, rows[m] - 1)) * Skp;
            const float *vb = pack_v ? vp + bh * Sk * Dvp
                                     : v + b * g->v_stride[0] + (h / g->kv_group) * g->v_stride[1];
            const long ldv = pack_v ? Dvp : g->v_stride[2];
            float *yb = y + b * g->y_stride[0] + h * g->y_stride[1] + i0 * g->y_stride[2];
            lw_attention_pv(ar, rows, nmax, tiles, vb, ldv, Dv, Dvp, inv, yb, g->y_stride[2]);
        }
    }
}
