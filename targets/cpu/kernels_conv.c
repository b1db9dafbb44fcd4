/* kernels_conv.c: fp32 convolutions (cpu target): im2col + the packed GEMM of kernels_gemm.c, and a direct
 * depthwise kernel. The convolution geometry (lw_conv_geom) is shared with the int8 kernels
 * (kernels_quant.c).
 */

#define LW_FUSED_PANELS LW_MAX(1, 256 / LW_NR) /* column panels per fused im2col+GEMM conv task */

/* Convolution geometry over 2-D spatial axes (1-D convolutions use H = KH = 1). */
typedef struct {
    long N, C, H, W;         /* input */
    long M, G;               /* output channels, groups */
    long KH, KW, SH, SW, DH, DW, PH, PW;
    long OH, OW;
} lw_conv_geom;

/* d[t] = row[iw0 + t * sw] for t < n, zero where that column is outside [0, W). */
static inline void lw_im2col_run(float *d, const float *row, long iw0, long sw, long W, long n) {
    long lo = iw0 >= 0 ? 0 : LW_MIN(n, LW_CDIV(-iw0, sw));
    long hi = iw0 >= W ? lo : LW_MAX(lo, LW_MIN(n, (W - 1 - iw0) / sw + 1));
    for (long t = 0; t < lo; t++) d[t] = 0.0f;
    const float *src = row + iw0;
    if (sw == 1) for (long t = lo; t < hi; t++) d[t] = src[t]; /* short runs: a loop beats memcpy */
    else if (sw == 2) for (long t = lo; t < hi; t++) d[t] = src[2 * t];
    else for (long t = lo; t < hi; t++) d[t] = src[t * sw];
    for (long t = hi; t < n; t++) d[t] = 0.0f;
}

#define LW_INDEX_TAPS 64 /* largest KH * KW the indexed im2col handles (larger kernels copy row runs) */

/* im2col of one panel through per-position source indices. Position j of the panel reads
 * x[c][base_j + off_t] for tap t, where base_j depends only on the output position and off_t only on the
 * tap, so the indices and padding masks are computed once per panel and reused for every channel. When
 * the positions are contiguous in the source (stride 1, output rows as wide as input rows) each row is a
 * vector load masked to zero over the padding; otherwise a gather from clamped (always valid) indices. */
static int lw_im2col_indexed(const lw_conv_geom *g, const float *x, float *d, long p0, long nr) {
    const long taps = g->KH * g->KW, HW = g->H * g->W, Cg = g->C / g->G;
    if (taps > LW_INDEX_TAPS || Cg * HW >= (1L << 31)) return 0;
    long oh[LW_NR], ow[LW_NR];
    int contiguous = 1;
    for (long j = 0; j < LW_NR; j++) {
        long p = p0 + LW_MIN(j, nr - 1);
        oh[j] = p / g->OW;
        ow[j] = p % g->OW;
        long src = oh[j] * g->SH * g->W + ow[j] * g->SW;
        if (j < nr && src != oh[0] * g->SH * g->W + ow[0] * g->SW + j) contiguous = 0;
    }
    if (!contiguous) return 0; /* gathers lose to row runs when strided; see lw_im2col_run */
    const long base0 = oh[0] * g->SH * g->W + ow[0] * g->SW;
    lw_vi mask[LW_INDEX_TAPS][LW_NV];
    int index[LW_INDEX_TAPS][LW_NR];
    long off[LW_INDEX_TAPS];
    for (long kh = 0, t = 0; kh < g->KH; kh++)
        for (long kw = 0; kw < g->KW; kw++, t++) {
            off[t] = (kh * g->DH - g->PH) * g->W + kw * g->DW - g->PW;
            for (long j = 0; j < LW_NR; j++) {
                long ih = oh[j] * g->SH + kh * g->DH - g->PH, iw = ow[j] * g->SW + kw * g->DW - g->PW;
                int valid = j < nr && ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
                mask[t][j / LW_VEC][j % LW_VEC] = valid ? -1 : 0;
                index[t][j] = valid ? (int)(ih * g->W + iw) : 0;
            }
        }
    const float *end = x + Cg * HW;
    float *dk = d;
    for (long c = 0; c < Cg; c++) {
        const float *xc = x + c * HW;
        for (long t = 0; t < taps; t++, dk += LW_NR) {
            const float *src = xc + base0 + off[t];
            if (contiguous && src >= x && src + LW_NR <= end) {
                for (int v = 0; v < LW_NV; v++)
                    lw_store(dk + v * LW_VEC, (lw_vf)((lw_vi)lw_load(src + v * LW_VEC) & mask[t][v]));
            } else {
                const int *ix = index[t];
                const int *m = (const int *)mask[t];
                for (long j = 0; j < LW_NR; j++) {
                    float v = xc[ix[j]];
                    int bits;
                    memcpy(&bits, &v, sizeof bits);
                    bits &= m[j];
                    memcpy(dk + j, &bits, sizeof bits);
                }
            }
        }
    }
    return 1;
}

/* im2col of one image's group into packed B panels [np0, np1): B[k][p], k = (c, kh, kw), p = (oh, ow). */
static void lw_im2col_panels(const lw_conv_geom *g, const float *x, float *dst, long np0, long np1) {
    const long Cg = g->C / g->G, K = Cg * g->KH * g->KW, P = g->OH * g->OW, HW = g->H * g->W;
    const int pointwise = g->KH == 1 && g->KW == 1 && g->SH == 1 && g->SW == 1 && g->PH == 0 && g->PW == 0
                          && g->OH == g->H && g->OW == g->W;
    for (long np = np0; np < np1; np++) {
        float *d = dst + np * K * LW_NR;
        const long p0 = np * LW_NR, nr = LW_MIN((long)LW_NR, P - p0);
        if (pointwise) {
            for (long k = 0; k < K; k++) {
                memcpy(d + k * LW_NR, x + k * HW + p0, (size_t)nr * sizeof(float));
                for (long j = nr; j < LW_NR; j++) d[k * LW_NR + j] = 0.0f;
            }
            continue;
        }
        if (lw_im2col_indexed(g, x, d, p0, nr)) continue;
        /* Split the panel's positions into runs that stay on one output row. */
        long run_j[LW_NR + 1], run_oh[LW_NR + 1], run_ow[LW_NR + 1], runs = 0;
        for (long j = 0; j < nr;) {
            long p = p0 + j, oh = p / g->OW, ow = p % g->OW, len = LW_MIN(nr - j, g->OW - ow);
            run_j[runs] = j; run_oh[runs] = oh; run_ow[runs] = ow; runs++;
            j += len;
        }
        run_j[runs] = nr;
        long k = 0;
        for (long c = 0; c < Cg; c++)
            for (long kh = 0; kh < g->KH; kh++)
                for (long kw = 0; kw < g->KW; kw++, k++) {
                    float *dk = d + k * LW_NR;
                    for (long r = 0; r < runs; r++) {
                        long j = run_j[r], len = run_j[r + 1] - j;
                        long ih = run_oh[r] * g->SH - g->PH + kh * g->DH;
                        if (ih < 0 || ih >= g->H) {
                            for (long t = 0; t < len; t++) dk[j + t] = 0.0f;
                            continue;
                        }
                        const float *row = x + c * HW + ih * g->W;
                        lw_im2col_run(dk + j, row, run_ow[r] * g->SW - g->PW + kw * g->DW, g->SW, g->W, len);
                    }
                    for (long j = nr; j < LW_NR; j++) dk[j] = 0.0f;
                }
    }
}

/* Convolution through im2col + packed GEMM: w is packed A per group ([G][ceil(Mg/MR)][K][MR]).
 * ws holds G GEMM items then the packed columns of one image ([G][ceil(P/NR)][K][NR]). */
static void lw_conv2d(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                      const float *res, long res_ns, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long G = g->G, Cg = g->C / G, Mg = g->M / G, K = Cg * g->KH * g->KW, P = g->OH * g->OW;
    const long np = LW_CDIV(P, LW_NR), a_size = LW_CDIV(Mg, LW_MR) * LW_MR * K, b_size = np * LW_NR * K;
    lw_gemm_item *items = (lw_gemm_item *)ws;
    float *col = (float *)(ws + LW_ALIGN64((size_t)G * 64));
    const lw_gemm_shape s = {Mg, P, K, P, *e, 0, 0};
    /* Fused im2col+GEMM tasks cover all output channels of LW_FUSED_PANELS column panels, so the weights
     * are streamed once per task: worth it only when there are enough such tasks for every thread.
     * Otherwise (small images, big weights) im2col everything first and let lw_gemm block both ways. */
    const long nbf = LW_FUSED_PANELS, blocks = LW_CDIV(np, nbf);
    const int fused = G * blocks >= 2L * nt;
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * g->H * g->W;
        for (long gi = 0; gi < G; gi++) {
            items[gi].a = w + gi * a_size;
            items[gi].b = col + gi * b_size;
            items[gi].c = y + (n * g->M + gi * Mg) * P;
            items[gi].bias = bias ? bias + gi * Mg * e->bias_rs : NULL;
            items[gi].res = res ? res + n * res_ns + gi * Mg * e->res_rs : NULL;
        }
        if (fused) {
            /* each task builds its own column panels and consumes them while they are in cache */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
            for (long t = 0; t < G * blocks; t++) {
                long gi = t / blocks, p0 = (t % blocks) * nbf, p1 = LW_MIN(np, p0 + nbf);
                lw_im2col_panels(g, xn + gi * Cg * g->H * g->W, col + gi * b_size, p0, p1);
                lw_gemm_block(&s, items + gi, 0, LW_CDIV(Mg, LW_MR), p0, p1);
            }
        } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && G * np > 1)
            for (long t = 0; t < G * np; t++)
                lw_im2col_panels(g, xn + (t / np) * Cg * g->H * g->W, col + (t / np) * b_size, t % np,
                                 t % np + 1);
            lw_gemm(nt, &s, items, G);
        }
    }
}

/* --- depthwise ------------------------------------------------------------------------------------- */

#define LW_DW_SLOTS 64 /* staging planes in the workspace: at most this many threads run one depthwise conv */
#define LW_DW_ACC 8    /* independent accumulators per block (R output rows x V vectors): hides FMA latency */

/* A depthwise conv's blocking and its staged input plane. Every padded input row r is staged KW times,
 * once per kernel column: copy kw holds padded columns i * SW + kw * DW for i < lq (at [r][kw][i]), so
 * every tap of every stride and dilation reads whole aligned vectors (unaligned loads straddle two cache
 * lines and halve the load throughput that bounds this kernel). lq covers the output row rounded up to
 * whole blocks of V vectors. A plane is computed in chunks of ch output rows (a multiple of R), each from
 * the `rows` input rows it reads, staged just before, so the staged rows stay in L1 (a whole staged plane
 * does not, and streaming it through L2 made the kernel 3x slower). ch is the most that fits in the
 * workspace slot (targets/cpu/emit_linear.py sizes it for 8 rows), at most the plane in whole blocks. */
typedef struct {
    long nvec, V, R, lq, ch, rows;
} lw_dw_plan;

static lw_dw_plan lw_dw_plan_of(const lw_conv_geom *g, long slot) {
    lw_dw_plan p;
    p.nvec = LW_CDIV(g->OW, LW_VEC);
    p.V = p.nvec >= 5 ? 8 : p.nvec >= 3 ? 4 : p.nvec; /* vectors per block: a power of two up to 8 */
    p.R = LW_DW_ACC / p.V;
    p.lq = LW_CDIV(p.nvec, p.V) * p.V * LW_VEC;
    const long reach = (g->KH - 1) * g->DH + 1, most = LW_CDIV(g->OH, p.R) * p.R;
    p.ch = p.R;
    while (p.ch < most && (p.ch + p.R - 1) * g->SH + reach <= slot / (g->KW * p.lq)) p.ch += p.R;
    p.rows = (p.ch - 1) * g->SH + reach;
    return p;
}

#if LW_VEC == 16 && defined(__AVX512F__)
#include <immintrin.h>
#define LW_CONV_AVX512 1
/* The lanes [lo, hi) of a 16-lane mask (empty when hi <= lo). */
static inline __mmask16 lw_mask_range(long lo, long hi) {
    lo = LW_MAX(lo, 0);
    hi = LW_MIN(hi, 16);
    return hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
/* p + i without forming the pointer in C (a masked load may start before or end past an array). */
static inline const float *lw_addr(const float *p, long i) {
    return (const float *)((uintptr_t)p + (uintptr_t)(i * (long)sizeof(float)));
}
#endif

/* Store the first n lanes (0 < n <= LW_VEC) of v at p. */
static inline void lw_store_part(float *p, lw_vf v, long n) {
#ifdef LW_CONV_AVX512
    _mm512_mask_storeu_ps(p, lw_mask_range(0, n), (__m512)v);
#else
    float t[LW_VEC];
    lw_store(t, v);
    memcpy(p, t, (size_t)n * sizeof(float));
#endif
}

/* The first n floats at p (0 < n <= LW_VEC), zero in the other lanes. */
static inline lw_vf lw_load_part(const float *p, long n) {
#ifdef LW_CONV_AVX512
    return (lw_vf)_mm512_maskz_loadu_ps(lw_mask_range(0, n), p);
#else
    float t[LW_VEC] = {0};
    memcpy(t, p, (size_t)n * sizeof(float));
    return lw_load(t);
#endif
}

#ifdef LW_CONV_AVX512
#define LW_DW_MASKS 1024 /* most row-copy vectors whose load masks lw_depthwise2d precomputes */
/* The load masks of the n / 16 vectors of a staged row copy (d[i] = row[c0 + i * sw], sw <= 2): the
 * same for every row and channel. Each holds the first (and for sw = 2, in the high half, the second)
 * 16-column load's mask. */
static void lw_dw_row_masks(uint32_t *m, long c0, long sw, long W, long n) {
    for (long i = 0; i < n; i += 16) {
        const long c = c0 + i * sw;
        uint32_t hi = sw == 2 ? lw_mask_range(-c - 16, W - c - 16) : 0;
        m[i / 16] = lw_mask_range(-c, W - c) | hi << 16;
    }
}
#endif

/* d[i] = row[c0 + i * sw] for i < n (a multiple of LW_VEC), zero where that column is outside [0, W);
 * m: the copy's masks (lw_dw_row_masks) or NULL. */
static void lw_dw_stage_row(float *d, const float *row, long c0, long sw, long W, long n, const uint32_t *m) {
#ifdef LW_CONV_AVX512
    if (m) {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for (long i = 0; i < n; i += 16, m++) {
            const long c = c0 + i * sw;
            __m512 v = _mm512_maskz_loadu_ps((__mmask16)*m, lw_addr(row, c));
            if (sw == 2) v = _mm512_permutex2var_ps(v, even, _mm512_maskz_loadu_ps((__mmask16)(*m >> 16),
                                                                                 lw_addr(row, c + 16)));
            _mm512_store_ps(d + i, v);
        }
        return;
    }
#endif
    (void)m;
    lw_im2col_run(d, row, c0, sw, W, n);
}

/* Stage the padded rows [r0, r0 + rows) of input plane xp ([H][W]) as described at lw_dw_plan; masks:
 * every copy's load masks ([KW][lq / 16], see lw_dw_row_masks) or NULL. */
static void lw_dw_stage(const lw_conv_geom *g, const lw_dw_plan *p, const float *xp, long r0, float *st,
                        const uint32_t *masks) {
    for (long r = 0; r < p->rows; r++) {
        const long ih = r0 + r - g->PH;
        for (long kw = 0; kw < g->KW; kw++) {
            float *d = st + (r * g->KW + kw) * p->lq;
            if (ih < 0 || ih >= g->H) {
                for (long i = 0; i < p->lq; i += LW_VEC) lw_store(d + i, (lw_vf){0});
            } else {
                lw_dw_stage_row(d, xp + ih * g->W, kw * g->DW - g->PW, g->SW, g->W, p->lq,
                                masks ? masks + kw * (p->lq / 16) : NULL);
            }
        }
    }
}

/* The epilogue of one output vector t at position p (n valid lanes): bias, residual and the activations
 * that have a vector form (the others run over the stored plane afterwards). */
static inline lw_vf lw_dw_epilogue(const lw_epilogue *e, lw_vf t, float b, const float *rm, long p, long n) {
    if (e->alpha != 1.0f) t *= lw_splat(e->alpha);
    t += lw_splat(b);
    if (rm) {
        if (e->res_cs == 0) {
            t += lw_splat(rm[0]);
        } else {
            t += n == LW_VEC ? lw_load(rm + p) : lw_load_part(rm + p, n);
        }
    }
    const lw_vf zero = (lw_vf){0}, lo = lw_splat(e->p0), hi = lw_splat(e->p1);
    switch (e->act) {
    case LW_ACT_RELU: t = lw_vselect(t < zero, zero, t); break;
    case LW_ACT_LEAKYRELU: t = lw_vselect(t >= zero, t, t * lo); break;
    case LW_ACT_CLIP: t = lw_vselect(t < lo, lo, t); t = lw_vselect(t > hi, hi, t); break;
    default: break;
    }
    return t;
}

/* Output rows [oh_lo, oh_hi) of one plane (staged from padded row oh_lo * SH at st), R rows x V vectors
 * per block, every tap accumulated in registers (R * V independent chains), the epilogue applied before
 * the store. Inlined with constant R and V (and KH, KW for 3x3) so the accumulators stay in registers.
 * Blocks past the chunk's last row or the plane's last column are computed from staged padding and not
 * stored. */
static inline __attribute__((always_inline)) void lw_dw_rows(const int R, const int V, const long KH,
                                                             const long KW, const lw_conv_geom *g,
                                                             const lw_dw_plan *p, const float *st,
                                                             const long *toff, const float *wp,
                                                             float *yp, float b, const float *rm,
                                                             const lw_epilogue *e, long oh_lo, long oh_hi) {
    const long rs = KW * p->lq, OW = g->OW, rstep = g->SH * rs;
    for (long oh0 = oh_lo; oh0 < oh_hi; oh0 += R)
        for (long o0 = 0; o0 < p->nvec * LW_VEC; o0 += V * LW_VEC) {
            lw_vf acc[LW_DW_ACC];
            _Pragma("GCC unroll 8") for (int i = 0; i < R * V; i++) acc[i] = (lw_vf){0};
            const float *blk = st + (oh0 - oh_lo) * rstep + o0;
            for (long kh = 0; kh < KH; kh++)
                for (long kw = 0; kw < KW; kw++) {
                    const float *src = blk + toff[kh * KW + kw];
                    const lw_vf wv = lw_splat(wp[kh * KW + kw]);
                    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                        _Pragma("GCC unroll 8") for (int v = 0; v < V; v++)
                            acc[r * V + v] += wv * lw_load(src + r * rstep + v * LW_VEC);
                }
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                const long oh = oh0 + r;
                if (oh >= oh_hi) break;
                float *yr = yp + oh * OW;
                _Pragma("GCC unroll 8") for (int v = 0; v < V; v++) {
                    const long o = o0 + v * LW_VEC, n = LW_MIN((long)LW_VEC, OW - o);
                    if (n <= 0) break;
                    lw_vf t = lw_dw_epilogue(e, acc[r * V + v], b, rm, oh * OW + o, n);
                    if (n == LW_VEC) lw_store(yr + o, t);
                    else lw_store_part(yr + o, t, n);
                }
            }
        }
}

#define LW_DW_DISPATCH(KH, KW)                                                                    \
    do {                                                                                          \
        if (pl.V == 8) lw_dw_rows(1, 8, KH, KW, g, &pl, st, toff, wp, yp, b, rm, e, lo, hi);      \
        else if (pl.V == 4) lw_dw_rows(2, 4, KH, KW, g, &pl, st, toff, wp, yp, b, rm, e, lo, hi); \
        else if (pl.V == 2) lw_dw_rows(4, 2, KH, KW, g, &pl, st, toff, wp, yp, b, rm, e, lo, hi); \
        else lw_dw_rows(8, 1, KH, KW, g, &pl, st, toff, wp, yp, b, rm, e, lo, hi);                \
    } while (0)

/* Depthwise convolution (G == C, M a multiple of C), direct: one task per (image, output channel) computes
 * its plane chunk by chunk, staging each chunk's input rows (lw_dw_stage) in its thread's slot of the
 * workspace (slot floats each, LW_DW_SLOTS slots at most, then the taps' offsets) and computing the rows
 * from them (lw_dw_rows). w is [M][KH][KW] as in ONNX; bias per channel and residual as the epilogue
 * addresses them. Every output is computed the same way whatever the thread count. */
static void lw_depthwise2d(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                           const float *res, long res_ns, float *y, float *ws, long slot,
                           const lw_epilogue *e) {
    const lw_dw_plan pl = lw_dw_plan_of(g, slot);
    const long mult = g->M / g->C, P = g->OH * g->OW, taps = g->KH * g->KW, tasks = g->N * g->M;
    const long slots = LW_MIN((long)LW_DW_SLOTS, tasks);
    const int generic = e->act == LW_ACT_SIGMOID || e->act == LW_ACT_TANH || e->act == LW_ACT_GELU;
    /* each tap's offset in the staged plane from a block's first output: its row, its column's copy */
    long *toff = (long *)(ws + slots * slot);
    for (long kh = 0; kh < g->KH; kh++)
        for (long kw = 0; kw < g->KW; kw++) toff[kh * g->KW + kw] = (kh * g->DH * g->KW + kw) * pl.lq;
    const uint32_t *masks = NULL;
#ifdef LW_CONV_AVX512
    uint32_t mask_table[LW_DW_MASKS];
    if (g->SW <= 2 && g->KW * (pl.lq / 16) <= LW_DW_MASKS) {
        for (long kw = 0; kw < g->KW; kw++)
            lw_dw_row_masks(mask_table + kw * (pl.lq / 16), kw * g->DW - g->PW, g->SW, g->W, pl.lq);
        masks = mask_table;
    }
#endif
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks > 1)
    {
        /* an even static split over the first `slots` threads (one staging slot each) */
        const long used = LW_MIN((long)omp_get_num_threads(), slots), tid = omp_get_thread_num();
        float *st = ws + LW_MIN(tid, slots - 1) * slot;
        const long t0 = tid < used ? tid * tasks / used : tasks;
        const long t1 = tid < used ? (tid + 1) * tasks / used : tasks;
        for (long t = t0; t < t1; t++) {
            const long n = t / g->M, m = t % g->M;
            const float *xp = x + (n * g->C + m / mult) * g->H * g->W;
            const float *wp = w + m * taps;
            const float b = bias ? e->bias_scale * bias[m * e->bias_rs] : 0.0f;
            const float *rm = res ? res + n * res_ns + m * e->res_rs : NULL;
            float *yp = y + t * P;
            for (long lo = 0; lo < g->OH; lo += pl.ch) {
                const long hi = LW_MIN(g->OH, lo + pl.ch);
                lw_dw_stage(g, &pl, xp, lo * g->SH, st, masks);
                if (g->KH == 3 && g->KW == 3) LW_DW_DISPATCH(3, 3);
                else LW_DW_DISPATCH(g->KH, g->KW);
            }
            if (generic) lw_activate(yp, P, e->act, e->p0, e->p1);
        }
    }
}
