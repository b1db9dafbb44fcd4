/* kernels_transformer.c: layer normalisation and fused attention (cpu target).
 *
 * GELU is not here: it is an elementwise op and a GEMM epilogue activation (lw_gelu, kernels_common.h).
 */

/* LayerNormalization of one contiguous row: one pass for the mean and variance (sums of x - x[0], which
 * keeps the variance accurate when the mean is large against the spread), one to normalise. */
static void lw_layernorm_row(const float *x, const float *scale, const float *bias, float *y, long n,
                             float eps) {
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
    for (long r = 0; r < rows; r++) lw_layernorm_row(x + r * cols, scale, bias, y + r * cols, cols, eps);
}

/* Fused attention over Q [B, H, Sq, D], K [B, H, Sk, D] (or [B, H, D, Sk] when k_transposed),
 * V [B, H, Sk, Dv] into Y [B, H, Sq, Dv]. The masks are addressed by their strides along (b, h, q, k),
 * zero where they broadcast. */
typedef struct {
    long B, H, Sq, Sk, D, Dv;
    int k_transposed, causal, nan_to_zero;
    float scale, mask_fill;
    long mask_stride[4], bool_stride[4];
} lw_attention_geom;

/* Query rows per task: each K^T (and V) vector loaded serves this many rows (the GEMM tile height). */
#define LW_ATTN_ROWS LW_MR

static inline float lw_dot(const float *a, const float *b, long n) {
    lw_vf acc = (lw_vf){0};
    long i = 0;
    for (; i + LW_VEC <= n; i += LW_VEC) acc += lw_load(a + i) * lw_load(b + i);
    float s = 0.0f;
    for (int l = 0; l < LW_VEC; l++) s += acc[l];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* One tile of the micro-kernel below: NV vectors of columns at j (b has row stride ldb). */
#define LW_ATTN_TILE(NV, BPTR, LDB, STORE)                                                     \
    do {                                                                                       \
        lw_vf acc[LW_ATTN_ROWS][NV];                                                           \
        for (long r = 0; r < LW_ATTN_ROWS; r++)                                                \
            for (int u = 0; u < NV; u++) acc[r][u] = (lw_vf){0};                               \
        for (long k = 0; k < K; k++) {                                                         \
            lw_vf bv[NV];                                                                      \
            for (int u = 0; u < NV; u++) bv[u] = lw_load((BPTR) + k * (LDB) + u * LW_VEC);     \
            for (long r = 0; r < LW_ATTN_ROWS; r++) {                                          \
                const lw_vf ak = lw_splat(ar[r][k]);                                           \
                for (int u = 0; u < NV; u++) acc[r][u] += ak * bv[u];                          \
            }                                                                                  \
        }                                                                                      \
        STORE;                                                                                 \
    } while (0)

/* c[r][0..N) = sum_k a[r][k] b[k][0..N) for r < rows <= LW_ATTN_ROWS: a register-tiled micro-kernel
 * (LW_ATTN_ROWS x 2 vectors of accumulators; each b vector loaded once serves every row). Missing rows
 * repeat the last one and are not stored, so the tile loop has no row branches. The last columns (fewer
 * than a vector) are copied, zero-padded, into a [K][LW_VEC] panel so they run vectorised too. */
static void lw_attention_mm(const float *a, long lda, long rows, const float *b, long ldb, long K, long N,
                            float *c, long ldc) {
    const float *ar[LW_ATTN_ROWS];
    for (long r = 0; r < LW_ATTN_ROWS; r++) ar[r] = a + LW_MIN(r, rows - 1) * lda;
    long j = 0;
    for (; j + 2 * LW_VEC <= N; j += 2 * LW_VEC)
        LW_ATTN_TILE(2, b + j, ldb, for (long r = 0; r < rows; r++) {
            lw_store(c + r * ldc + j, acc[r][0]);
            lw_store(c + r * ldc + j + LW_VEC, acc[r][1]);
        });
    for (; j + LW_VEC <= N; j += LW_VEC)
        LW_ATTN_TILE(1, b + j, ldb, for (long r = 0; r < rows; r++) lw_store(c + r * ldc + j, acc[r][0]));
    const long rem = N - j;
    if (rem > 0) {
        float panel[K * LW_VEC];
        for (long k = 0; k < K; k++)
            for (long u = 0; u < LW_VEC; u++) panel[k * LW_VEC + u] = u < rem ? b[k * ldb + j + u] : 0.0f;
        LW_ATTN_TILE(1, panel, LW_VEC, for (long r = 0; r < rows; r++) {
            float out[LW_VEC];
            lw_store(out, acc[r][0]);
            for (long u = 0; u < rem; u++) c[r * ldc + j + u] = out[u];
        });
    }
}

/* Raw scores q_i . k_j for rows i0..i0+rows-1 and keys j < nmax, into s[r * Sk + j]. */
static void lw_attention_scores(const lw_attention_geom *g, const float *q, const float *k, long i0,
                                long rows, long nmax, float *s) {
    const long Sk = g->Sk, D = g->D;
    if (g->k_transposed) { /* K^T rows are contiguous along keys: a GEMM tile */
        lw_attention_mm(q + i0 * D, D, rows, k, Sk, D, nmax, s, Sk);
        return;
    }
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < nmax; j++) s[r * Sk + j] = lw_dot(q + (i0 + r) * D, k + j * D, D);
}

/* Scale, mask, softmax (and the NaN guard) of one row of n scores. */
static void lw_attention_probs(const lw_attention_geom *g, float *s, long n, const float *mask,
                               const uint8_t *bmask) {
    const float scale = g->scale, fill = g->mask_fill;
    const long mk = g->mask_stride[3], bk = g->bool_stride[3];
    for (long j = 0; j < n; j++) s[j] *= scale;
    if (bmask)
        for (long j = 0; j < n; j++) s[j] = bmask[j * bk] ? s[j] : fill;
    if (mask) {
        if (mk == 1) for (long j = 0; j < n; j++) s[j] += mask[j];
        else for (long j = 0; j < n; j++) s[j] += mask[j * mk];
    }
    lw_softmax_row(s, s, n);
    if (g->nan_to_zero)
        for (long j = 0; j < n; j++) s[j] = s[j] != s[j] ? 0.0f : s[j];
}

static void lw_attention(int nt, const lw_attention_geom *g, const float *q, const float *k, const float *v,
                         const float *mask, const uint8_t *bmask, float *y) {
    const long blocks = LW_CDIV(g->Sq, LW_ATTN_ROWS), tasks = g->B * g->H * blocks;
    const long Sq = g->Sq, Sk = g->Sk, D = g->D, Dv = g->Dv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && tasks > 1)
    for (long t = 0; t < tasks; t++) {
        const long bh = t / blocks, b = bh / g->H, h = bh % g->H;
        const long i0 = (t % blocks) * LW_ATTN_ROWS, rows = LW_MIN(LW_ATTN_ROWS, Sq - i0);
        float s[LW_ATTN_ROWS * Sk];
        long n[LW_ATTN_ROWS];
        for (long r = 0; r < rows; r++) /* causal: key j is seen by query i when j <= i + Sk - Sq */
            n[r] = g->causal ? LW_MAX(0, LW_MIN(Sk, i0 + r + Sk - Sq + 1)) : Sk;
        long nmax = 0;
        for (long r = 0; r < rows; r++) nmax = LW_MAX(nmax, n[r]);
        lw_attention_scores(g, q + bh * Sq * D, k + bh * Sk * D, i0, rows, nmax, s);
        for (long r = 0; r < rows; r++) {
            const long i = i0 + r;
            const float *mr = mask ? mask + b * g->mask_stride[0] + h * g->mask_stride[1]
                                         + i * g->mask_stride[2] : NULL;
            const uint8_t *br = bmask ? bmask + b * g->bool_stride[0] + h * g->bool_stride[1]
                                              + i * g->bool_stride[2] : NULL;
            float *sr = s + r * Sk;
            lw_attention_probs(g, sr, n[r], mr, br);
            for (long j = n[r]; j < nmax; j++) sr[j] = 0.0f; /* causal: keys this row does not see */
        }
        lw_attention_mm(s, Sk, rows, v + bh * Sk * Dv, Dv, nmax, Dv, y + (bh * Sq + i0) * Dv, Dv);
    }
}
