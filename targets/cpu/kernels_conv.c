/* kernels_conv.c: fp32 convolutions (cpu target): a conv GEMM with its own micro-kernels (B read in place
 * for pointwise convs, im2col panels otherwise, a transposed form for small planes, a direct form over
 * phase grids with no im2col; see the sections at the end), and direct depthwise kernels
 * (LW_DEPTHWISE2D_G over phase grids on AVX-512, lw_depthwise2d elsewhere). The convolution geometry
 * (lw_conv_geom) is shared with the int8 kernels (kernels_quant.c).
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

/* --- depthwise over flattened phase grids (AVX-512) ------------------------------------------------- */

/* LW_DEPTHWISE2D_G: the depthwise conv of AVX-512 builds. Each channel's input is staged, a chunk of output
 * rows at a time, as zero-padded phase grids like lw_conv2d_d's (stride (SH, SW): SH * SW planes, phase
 * (ph, pw) holding padded rows i * SH + ph and columns j * SW + pw, rows Wq = OW + ((KW - 1) * DW) / SW
 * wide), flattened: output (oh, ow) is grid position q = oh * Wq + ow and tap t reads q + toff[t]. So every
 * vector of 16 consecutive grid positions is a vector of outputs (the Wq - OW positions past each output
 * row, 2 of 16 on a 14x14 plane, are computed from padding and dropped) and a tap is one unaligned load: no
 * per-row blocks rounded up to whole vectors (a 7x7 plane's 49 outputs take 4 vectors, not 7 rows of one).
 * The valid lanes of a vector are compressed to the output's contiguous positions, then the epilogue and
 * one masked store (a table of the masks and output offsets per vector, the same for every chunk and
 * channel). 3x3 convs with unit row stride and rows wider than a vector compute in bands of output rows
 * instead (lw_dwg_band: each staged row load serves several output rows).
 *
 * Measured against ONNX Runtime 1.31 (its NCHWc depthwise kernel) in MobileNetV2, one thread: 7x7 planes
 * 1.2x, 14x14 1.5x, 28x28 1.25x, the stride-1 56x56 and 112x112 planes 1.15x and 1.25x, the stride-2 ones
 * 0.7x to 0.95x (staging streams their input from L3); lw_depthwise2d, the row-blocked kernel before,
 * was 0.13x to 0.85x.
 *
 * It is a macro so that the OpenMP region is outlined in the generated kernel, whose geometry and epilogue
 * are static constants: the per-thread code (always inlined) then folds them, unrolls the short row and
 * vector loops and drops the padding tests of a small plane's rows (per-channel overhead was most of the
 * time on 7x7 and 14x14 planes). */
#ifdef LW_CONV_AVX512
#define LW_DWG_MAXV 1024 /* most output vectors per chunk (their masks and offsets are tabled) */
#define LW_DWG_MAXRV 64  /* most vectors per staged grid row whose load masks are tabled */

typedef struct {
    long Wq, eh, ew, nph, ch, rows, ps, nv, rowv, size; /* grid row width, extra rows and columns the window
                                                           reaches, phases, output rows per chunk, staged rows
                                                           per phase, floats per phase, output vectors per
                                                           chunk, vectors per grid row, floats per slot */
} lw_dwg_plan;

/* The plan of chunks of ch output rows (emit_linear.py's depthwise_grid_plan computes the same sizes). */
static inline __attribute__((always_inline)) lw_dwg_plan lw_dwg_plan_of(const lw_conv_geom *g, long ch) {
    lw_dwg_plan p;
    p.eh = (g->KH - 1) * g->DH / g->SH;
    p.ew = (g->KW - 1) * g->DW / g->SW;
    p.Wq = g->OW + p.ew;
    p.nph = g->SH * g->SW;
    p.ch = ch;
    p.rows = ch + p.eh;
    p.ps = p.rows * p.Wq + (p.nph > 1 ? 16 : 0); /* a gap after each phase for its last row's spill */
    p.nv = LW_CDIV(ch * p.Wq, 16);
    p.rowv = LW_CDIV(p.Wq, 16);
    /* the last vector's taps read up to 15 + ew floats past the phases; the last row's store writes up to
     * 15 past its row */
    p.size = LW_CDIV(p.nph * p.ps + p.ew + 32, 16) * 16;
    return p;
}

/* What the threads share: per tap its offset in the staged grids, per output vector of a chunk its valid
 * lanes and the chunk-relative output offset of its first, per row vector the staging load masks
 * (lw_dw_row_masks form, strides 1 and 2). */
typedef struct {
    long toff[LW_INDEX_TAPS];
    uint16_t msk[LW_DWG_MAXV];
    int off[LW_DWG_MAXV];
    uint32_t masks[LW_DWG_MAXRV];
} lw_dwg_tables;

static void lw_dwg_prepare(const lw_conv_geom *g, long ch, lw_dwg_tables *tb) {
    const lw_dwg_plan pl = lw_dwg_plan_of(g, ch);
    for (long kh = 0; kh < g->KH; kh++)
        for (long kw = 0; kw < g->KW; kw++) {
            const long rh = kh * g->DH, rw = kw * g->DW;
            tb->toff[kh * g->KW + kw] =
                ((rh % g->SH) * g->SW + rw % g->SW) * pl.ps + (rh / g->SH) * pl.Wq + rw / g->SW;
        }
    for (long k = 0; k < pl.nv; k++) {
        const long q0 = 16 * k;
        uint32_t m = 0;
        for (long l = 0; l < 16; l++) m |= (uint32_t)((q0 + l) % pl.Wq < g->OW) << l;
        tb->msk[k] = (uint16_t)m;
        tb->off[k] = (int)((q0 / pl.Wq) * g->OW + LW_MIN(q0 % pl.Wq, g->OW));
    }
    if (g->SW <= 2 && pl.rowv <= LW_DWG_MAXRV) lw_dw_row_masks(tb->masks, -g->PW, g->SW, g->W, 16 * pl.rowv);
}

/* Stage output rows [r0, r0 + ch) of plane xp ([H][W]): for each phase its rows [r0, r0 + rows). Rows are
 * written in increasing address order within each phase, each as whole vectors whose lanes past the row
 * spill into the next row (which overwrites them) or the gap after the phase (read only by dropped lanes).
 * Strides 1 and 2 stage rows as masked vector loads (stride 2: the even and odd columns of one pair of
 * loads are the two column phases), others through lw_im2col_run. */
static inline __attribute__((always_inline)) void lw_dwg_stage(const lw_conv_geom *g, const lw_dwg_plan *p,
                                                               const float *xp, long r0, float *st,
                                                               const uint32_t *m) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const long SW = g->SW, Wq = p->Wq, rowv = p->rowv, c0 = -g->PW;
    const int vector = SW <= 2 && rowv <= LW_DWG_MAXRV;
    for (long ph = 0; ph < g->SH; ph++) {
        float *d = st + ph * SW * p->ps;
        _Pragma("GCC unroll 16") for (long i = 0; i < p->rows; i++, d += Wq) {
            const long ih = (r0 + i) * g->SH + ph - g->PH;
            if (ih < 0 || ih >= g->H) {
                for (long pw = 0; pw < SW; pw++)
                    for (long j = 0; j < Wq; j += 16)
                        _mm512_storeu_ps(d + pw * p->ps + j, _mm512_setzero_ps());
                continue;
            }
            const float *row = xp + ih * g->W;
            if (vector && SW == 1) {
                for (long v = 0; v < rowv; v++)
                    _mm512_storeu_ps(d + 16 * v,
                                     _mm512_maskz_loadu_ps((__mmask16)m[v], lw_addr(row, c0 + 16 * v)));
            } else if (vector) {
                for (long v = 0; v < rowv; v++) {
                    const __m512 lo = _mm512_maskz_loadu_ps((__mmask16)m[v], lw_addr(row, c0 + 32 * v));
                    const __m512 hi =
                        _mm512_maskz_loadu_ps((__mmask16)(m[v] >> 16), lw_addr(row, c0 + 32 * v + 16));
                    _mm512_storeu_ps(d + 16 * v, _mm512_permutex2var_ps(lo, even, hi));
                    _mm512_storeu_ps(d + p->ps + 16 * v, _mm512_permutex2var_ps(lo, odd, hi));
                }
            } else {
                for (long pw = 0; pw < SW; pw++) lw_im2col_run(d + pw * p->ps, row, c0 + pw, SW, g->W, Wq);
            }
        }
    }
}

/* The epilogue of one compressed output vector t (n valid lanes, at output position p): alpha, bias,
 * residual, activation. Relu and Clip are max/min with the bound first (a NaN t stays NaN, as with
 * lw_vactivate's selects); the others go through lw_vactivate. */
static inline __attribute__((always_inline)) __m512 lw_dwg_epilogue(const lw_epilogue *e, __m512 t, __m512 bv,
                                                                    const float *rc, long p, long n) {
    if (e->alpha != 1.0f) t = _mm512_mul_ps(t, _mm512_set1_ps(e->alpha));
    t = _mm512_add_ps(t, bv);
    if (rc)
        t = _mm512_add_ps(t, e->res_cs == 0 ? _mm512_set1_ps(rc[0])
                                            : _mm512_maskz_loadu_ps(lw_mask_range(0, n), rc + p));
    if (e->act == LW_ACT_RELU) return _mm512_max_ps(_mm512_setzero_ps(), t);
    if (e->act == LW_ACT_CLIP)
        return _mm512_min_ps(_mm512_set1_ps(e->p1), _mm512_max_ps(_mm512_set1_ps(e->p0), t));
    return (__m512)lw_vactivate((lw_vf)t, e->act, e->p0, e->p1);
}

/* Output vectors [k0, k0 + V) of a chunk staged at st (limit grid positions): every tap accumulated in
 * registers, then per vector its valid lanes compressed, the epilogue and one masked store at yc + off[k].
 * Inlined with a constant V. */
static inline __attribute__((always_inline)) void lw_dwg_vectors(const int V, const lw_conv_geom *g,
                                                                 const lw_dwg_tables *tb, const float *st,
                                                                 const float *wp, long k0, long limit,
                                                                 float *yc, __m512 bv, const float *rc,
                                                                 const lw_epilogue *e) {
    __m512 acc[8];
    _Pragma("GCC unroll 8") for (int v = 0; v < V; v++) acc[v] = _mm512_setzero_ps();
    const float *src = st + 16 * k0;
    _Pragma("GCC unroll 9") for (long t = 0; t < g->KH * g->KW; t++) {
        const __m512 wv = _mm512_set1_ps(wp[t]);
        const float *s = src + tb->toff[t];
        _Pragma("GCC unroll 8") for (int v = 0; v < V; v++)
            acc[v] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 16 * v), acc[v]);
    }
    _Pragma("GCC unroll 8") for (int v = 0; v < V; v++) {
        const long k = k0 + v;
        if (16 * k >= limit) break;
        __mmask16 m = (__mmask16)tb->msk[k];
        if (16 * k + 16 > limit) m &= lw_mask_range(0, limit - 16 * k);
        const long n = __builtin_popcount((unsigned)m);
        const __m512 t = lw_dwg_epilogue(e, _mm512_maskz_compress_ps(m, acc[v]), bv, rc, tb->off[k], n);
        _mm512_mask_storeu_ps(yc + tb->off[k], lw_mask_range(0, n), t);
    }
}

/* Whether a conv computes its staged grids in bands of output rows (lw_dwg_band) rather than as flattened
 * vectors: 3x3, stride and dilation 1 down the rows, output rows wider than a vector (emit_linear.py's
 * depthwise_grid_plan makes its chunks whole bands). */
#define LW_DWG_BANDS(g) ((g)->KH == 3 && (g)->KW == 3 && (g)->SH == 1 && (g)->DH == 1 && (g)->OW > 16)
#define LW_DWG_BAND 4 /* output rows per band */

/* Vectors [j, j + V) of output rows [b, b + LW_DWG_BAND) of a chunk staged at st (rows_left of them real):
 * output row b + r, tap (kh, kw) reads staged row b + r + kh, so each of the band's 6 x 3 shifted row loads
 * serves up to 3 rows (2 FMAs per load instead of 1: loads that straddle cache lines bound the flattened
 * form on large planes). */
static inline __attribute__((always_inline)) void lw_dwg_band(const int V, const lw_conv_geom *g,
                                                              const lw_dwg_plan *pl, const float *st, long b,
                                                              long j, long rows_left, const __m512 *wv,
                                                              float *yc, __m512 bv, const float *rc,
                                                              const lw_epilogue *e) {
    const int R = LW_DWG_BAND;
    __m512 acc[LW_DWG_BAND][2];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
    const float *base = st + b * pl->Wq + 16 * j;
    _Pragma("GCC unroll 6") for (int d = 0; d < R + 2; d++)
        _Pragma("GCC unroll 3") for (int kw = 0; kw < 3; kw++) {
            const long rw = kw * g->DW, co = (rw % g->SW) * pl->ps + rw / g->SW;
            __m512 row[2];
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++)
                row[v] = _mm512_loadu_ps(base + d * pl->Wq + co + 16 * v);
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                const int kh = d - r;
                if (kh < 0 || kh > 2) continue;
                _Pragma("GCC unroll 2") for (int v = 0; v < V; v++)
                    acc[r][v] = _mm512_fmadd_ps(wv[kh * 3 + kw], row[v], acc[r][v]);
            }
        }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
        if (r >= rows_left) break;
        _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) {
            const long col = 16 * (j + v), n = LW_MIN(16L, g->OW - col), p = (b + r) * g->OW + col;
            const __m512 t = lw_dwg_epilogue(e, acc[r][v], bv, rc, p, n);
            _mm512_mask_storeu_ps(yc + p, lw_mask_range(0, n), t);
        }
    }
}

/* Output rows [r0, r0 + ch) of a plane (weights wp, bias bv, residual rm; output yp) from their staged
 * grids. */
static inline __attribute__((always_inline)) void lw_dwg_chunk(const lw_conv_geom *g, const lw_dwg_plan *pl,
                                                               const lw_dwg_tables *tb, const float *st,
                                                               long r0, const float *wp, __m512 bv,
                                                               const float *rm, float *yp,
                                                               const lw_epilogue *e) {
    const long rows = LW_MIN(pl->ch, g->OH - r0), limit = rows * pl->Wq, nvl = LW_CDIV(limit, 16);
    float *yc = yp + r0 * g->OW;
    const float *rc = rm && e->res_cs ? rm + r0 * g->OW : rm;
    if (LW_DWG_BANDS(g)) {
        __m512 wv[9];
        _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(wp[t]);
        const long J = LW_CDIV(g->OW, 16);
        for (long b = 0; b < rows; b += LW_DWG_BAND) {
            long j = 0;
            for (; j + 2 <= J; j += 2) lw_dwg_band(2, g, pl, st, b, j, rows - b, wv, yc, bv, rc, e);
            if (j < J) lw_dwg_band(1, g, pl, st, b, j, rows - b, wv, yc, bv, rc, e);
        }
        return;
    }
    long k = 0;
    for (; k + 8 <= nvl; k += 8) lw_dwg_vectors(8, g, tb, st, wp, k, limit, yc, bv, rc, e);
    if (nvl - k > 4) lw_dwg_vectors(8, g, tb, st, wp, k, limit, yc, bv, rc, e);
    else if (nvl - k > 2) lw_dwg_vectors(4, g, tb, st, wp, k, limit, yc, bv, rc, e);
    else if (nvl - k > 0) lw_dwg_vectors(2, g, tb, st, wp, k, limit, yc, bv, rc, e);
}

/* The three taps of a 3-wide stride-2 window for 16 consecutive outputs from one input row: with s the input
 * column of the first output's first tap, columns s + 2i (a), s + 2i + 1 (b) and s + 2i + 2 (c) for i < 16,
 * from three masked loads of the 33 columns (`fill` outside [0, W)) and three permutes. Shared by the
 * stride-2 depthwise conv (fill 0) and MaxPool (fill -inf, after a max over the window's rows: `rowmax`
 * combines each row's loads with x > m ? x : m, the first row taken as is). */
static inline __attribute__((always_inline)) void lw_s2_taps(const float *const *rows, int nr, long s, long W,
                                                             __m512 fill, int rowmax, __m512 *a, __m512 *b,
                                                             __m512 *c) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i next = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    const __mmask16 m0 = lw_mask_range(-s, W - s), m1 = lw_mask_range(-s - 16, W - s - 16);
    const __mmask16 m2 = lw_mask_range(-s - 32, LW_MIN(1, W - s - 32));
    __m512 lo = fill, hi = fill, nx = fill;
    for (int r = 0; r < nr; r++) {
        const __m512 x0 = _mm512_mask_loadu_ps(fill, m0, lw_addr(rows[r], s));
        const __m512 x1 = _mm512_mask_loadu_ps(fill, m1, lw_addr(rows[r], s + 16));
        const __m512 x2 = _mm512_mask_loadu_ps(fill, m2, lw_addr(rows[r], s + 32));
        if (rowmax && r > 0) {
            lo = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x0, lo, _CMP_GT_OQ), lo, x0);
            hi = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x1, hi, _CMP_GT_OQ), hi, x1);
            nx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x2, nx, _CMP_GT_OQ), nx, x2);
        } else {
            lo = x0, hi = x1, nx = x2;
        }
    }
    *a = _mm512_permutex2var_ps(lo, even, hi);
    *b = _mm512_permutex2var_ps(lo, odd, hi);
    *c = _mm512_permutex2var_ps(*a, next, nx);
}

/* A 3x3 stride-2 depthwise plane straight from its input rows (no staging): per block of 16 outputs of an
 * output row, each window row's 33 input columns as three masked loads (zeros outside the row, and a zero
 * row outside the plane, as the staged grids hold), its even, odd and next-even columns by permutes, and
 * the taps accumulated in lw_dwg_vectors' order (the same bits). In MobileNetV2 (1 thread, then 2): 96@112
 * 0.252 -> 0.200 and 0.150 -> 0.117 ms, 144@56 0.084 -> 0.062 and 0.064 -> 0.056 ms; the model 1.5% and 3%
 * faster: staging the four phase grids cost about as much as the taps. */
#define LW_DW3S2(g) \
    ((g)->KH == 3 && (g)->KW == 3 && (g)->SH == 2 && (g)->SW == 2 && (g)->DH == 1 && (g)->DW == 1)
static void lw_dw3s2_plane(const lw_conv_geom *g, const float *xp, const float *wp, __m512 bv, const float *rm,
                           float *yp, const lw_epilogue *e) {
    const long W = g->W, OW = g->OW;
    __m512 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(wp[t]);
    for (long oh = 0; oh < g->OH; oh++) {
        for (long ow = 0; ow < OW; ow += 16) {
            const long s = 2 * ow - g->PW, n = LW_MIN(16L, OW - ow);
            __m512 acc = _mm512_setzero_ps();
            _Pragma("GCC unroll 3") for (int kh = 0; kh < 3; kh++) {
                const long ih = 2 * oh - g->PH + kh;
                const float *xr = xp + (ih >= 0 && ih < g->H ? ih : 0) * W;
                __m512 a, b, c; /* a row outside the plane: zero taps, as the staged grids hold */
                lw_s2_taps(&xr, ih >= 0 && ih < g->H, s, W, _mm512_setzero_ps(), 0, &a, &b, &c);
                acc = _mm512_fmadd_ps(wv[kh * 3], a, acc);
                acc = _mm512_fmadd_ps(wv[kh * 3 + 1], b, acc);
                acc = _mm512_fmadd_ps(wv[kh * 3 + 2], c, acc);
            }
            const long p = oh * OW + ow;
            _mm512_mask_storeu_ps(yp + p, lw_mask_range(0, n), lw_dwg_epilogue(e, acc, bv, rm, p, n));
        }
    }
}

/* One thread's share of a depthwise conv: an even static split of the (image, output channel) planes over
 * the first `slots` threads. Each thread's slot of ws holds two staging buffers: chunk j + 1 is staged
 * while chunk j is computed, so a chunk's loads do not wait on the stores that staged it (a load that
 * spans two recent unaligned stores cannot be forwarded from them: a third of a 7x7 plane's time). */
static inline __attribute__((always_inline)) void lw_dwg_thread(const lw_conv_geom *g, const float *x,
                                                                const float *w, const float *bias,
                                                                const float *res, long res_ns, float *y,
                                                                float *ws, long slot, long ch,
                                                                const lw_epilogue *e,
                                                                const lw_dwg_tables *tb) {
    const lw_dwg_plan pl = lw_dwg_plan_of(g, ch);
    const long tasks = g->N * g->M, slots = LW_MIN((long)LW_DW_SLOTS, tasks);
    const long mult = g->M / g->C, HW = g->H * g->W, P = g->OH * g->OW, chunks = LW_CDIV(g->OH, ch);
    const long used = LW_MIN((long)omp_get_num_threads(), slots), tid = omp_get_thread_num();
    const long t0 = tid < used ? tid * tasks / used : tasks;
    const long t1 = tid < used ? (tid + 1) * tasks / used : tasks;
    if (LW_DW3S2(g)) { /* no staging: no workspace (emit_linear.py's depthwise_unstaged) */
        for (long t = t0; t < t1; t++) {
            const long n = t / g->M, m = t % g->M;
            const __m512 bv = _mm512_set1_ps(bias ? e->bias_scale * bias[m * e->bias_rs] : 0.0f);
            lw_dw3s2_plane(g, x + (n * g->C + m / mult) * HW, w + m * 9, bv,
                           res ? res + n * res_ns + m * e->res_rs : NULL, y + t * P, e);
        }
        return;
    }
    float *const buf = ws + LW_MIN(tid, slots - 1) * slot;
    for (long i = pl.nph * pl.ps; i < pl.size; i++) buf[i] = buf[pl.size + i] = 0.0f;
    const long items = (t1 - t0) * chunks;
#define LW_DWG_XP(t) (x + ((t) / g->M * g->C + (t) % g->M / mult) * HW)
    if (items > 0) lw_dwg_stage(g, &pl, LW_DWG_XP(t0), 0, buf, tb->masks);
    for (long j = 0; j < items; j++) {
        if (j + 1 < items) {
            const long tn = t0 + (j + 1) / chunks;
            float *next = buf + ((j + 1) & 1) * pl.size;
            lw_dwg_stage(g, &pl, LW_DWG_XP(tn), (j + 1) % chunks * ch, next, tb->masks);
        }
        const long t = t0 + j / chunks, n = t / g->M, m = t % g->M;
        const __m512 bv = _mm512_set1_ps(bias ? e->bias_scale * bias[m * e->bias_rs] : 0.0f);
        const float *rm = res ? res + n * res_ns + m * e->res_rs : NULL;
        lw_dwg_chunk(g, &pl, tb, buf + (j & 1) * pl.size, j % chunks * ch, w + m * g->KH * g->KW, bv, rm,
                     y + t * P, e);
    }
#undef LW_DWG_XP
}

/* Depthwise convolution (G == C, M a multiple of C) over phase grids (see above). g and e should
 * point to static constants; w is [M][KH][KW] as in ONNX, at most LW_INDEX_TAPS taps; ws holds
 * LW_MIN(LW_DW_SLOTS, N * M) slots of `slot` floats (2 * lw_dwg_plan.size); ch output rows per chunk, with
 * ch * Wq <= 16 * LW_DWG_MAXV. Every output is computed the same way whatever the thread count. */
#define LW_DEPTHWISE2D_G(NT, g, x, w, bias, res, res_ns, y, ws, slot, ch, e)                              \
    do {                                                                                                    \
        lw_dwg_tables lw_tb_;                                                                               \
        if (!LW_DW3S2(g)) lw_dwg_prepare((g), (ch), &lw_tb_);                                               \
        const int lw_nt0_ = (NT);                                                                           \
        {                                                                                                   \
            const int nt = lw_nt0_ > 1 && (g)->N * (g)->M > 1 ? lw_nt0_ : 1;                                \
            _Pragma("omp parallel num_threads(nt) if (nt > 1)")                                             \
            lw_dwg_thread((g), (x), (w), (bias), (res), (res_ns), (y), (ws), (slot), (ch), (e), &lw_tb_); \
        }                                                                                                   \
    } while (0)
#endif

/* --- im2col + GEMM convolution ------------------------------------------------------------------------ */

/* The conv GEMM out[co][p] = W[co][:] . B[:][p] with its own micro-kernel: an LW_CV_MR x (NV vectors) tile of
 * accumulators, weights broadcast from the packed A panels (pack_conv_weights), B rows loaded as vectors,
 * and the epilogue applied to the accumulators before the one store to the output (no tile buffer, no
 * second pass). B is either the input itself, read in place (1x1 stride-1 unpadded convs: the plane
 * [C][H*W] is already the K x N matrix, row stride H*W, tiles of LW_CV_NV vectors, the last one loaded
 * masked), or im2col panels ([K][LW_NR], zero-padded). K is blocked by LW_CV_KC; blocks after the first
 * add the output's partial sums, so every output's reduction order is fixed whatever the thread count. */
#if LW_VEC == 16
#define LW_CV_MR 8 /* weight rows per panel (not the GEMM's LW_MR): CONV_MR in emit_linear.py */
#define LW_CV_NV 3 /* in-place tile width (vectors): 24 accumulators of 32 registers */
#elif LW_VEC == 8
#define LW_CV_MR 6
#define LW_CV_NV 2
#else
#define LW_CV_MR 4
#define LW_CV_NV 2
#endif
#define LW_CV_NVMAX (LW_NV > LW_CV_NV ? LW_NV : LW_CV_NV)
#define LW_CV_KC 256        /* K block: a K block of a B tile stays in L1 across the row panels */
/* In-place B rows prefetched LW_CV_PFD rows ahead by a K block's first row panel when K >= LW_CV_PFK: a
 * pointwise conv after a depthwise one (MobileNetV2's projections) reads its input at a stride of H*W floats,
 * which the hardware streamers do not follow, and at 2 threads half of it from the other core's cache. In
 * MobileNetV2 at 2 threads: 144->24@56 326 -> 287 kcycles, 192->32@28 125 -> 108, 384->64@14 134 -> 125;
 * no change at 1 thread; short-K expands (K < 128) measured slower with it. */
#define LW_CV_PFK 128
#define LW_CV_PFD 12
/* Expands split by output channels at 2+ threads: an in-place conv with more outputs than inputs (M > K)
 * whose input has at most LW_CV_MSPLIT floats runs as one even, static share of its row panels per thread,
 * all columns, so thread i writes the contiguous output channels that the static split of a depthwise conv
 * reading them gives to thread i (lw_dwg_thread): MobileNetV2's expand -> depthwise edges stay in one core's
 * cache. At 2 threads MobileNetV2 2-3% faster (the depthwise convs after 14x14 and 28x28 expands, the
 * expands themselves); larger inputs (its 16->96 at 112x112: 800 KB read whole by every thread) slower. */
#define LW_CV_MSPLIT 32768
#define LW_CV_BLOCK 131072  /* most output floats per task when K spans several blocks (partial sums in L2) */

typedef struct {
    const lw_epilogue *e;
    const float *a;    /* the group's packed weights [ceil(M/LW_CV_MR)][K][LW_CV_MR] */
    const float *b;    /* B: the group's input read in place (row stride bs), or its im2col panels */
    long bs, tw;       /* B row stride; tile width (columns) */
    int inplace;
    long M, N, K;      /* output channels of the group, positions, reduction length */
    long kb;           /* K block (LW_CV_KC, or half of K: LW_CV_KSPLIT) */
    float *y;          /* the group's output [M][N] */
    const float *bias; /* NULL, or the group's first channel's bias */
    const float *res;  /* NULL, or the group's first channel's residual */
} lw_cv_job;

/* The epilogue of one output vector t of row `row` (rr: the row's residual at the vector's first column, or
 * NULL; full: all LW_VEC lanes, else the first `tail`): alpha, bias, residual, activation. */
static inline __attribute__((always_inline)) lw_vf lw_cv_finish(const lw_cv_job *j, lw_vf t, long row,
                                                                const float *rr, int full, long tail) {
    const lw_epilogue *e = j->e;
    if (e->alpha != 1.0f) t *= lw_splat(e->alpha);
    if (j->bias) t += lw_splat(e->bias_scale * j->bias[row * e->bias_rs]);
    if (rr) {
        if (e->res_cs == 0) t += lw_splat(rr[0]);
        else t += full ? lw_load(rr) : lw_load_part(rr, tail);
    }
    return lw_vactivate(t, e->act, e->p0, e->p1);
}

/* One tile: rows [i0, i0 + mr) x columns [j0, j0 + n) (n > (NV - 1) * LW_VEC) over K block [k0, k0 + kc)
 * of a (a: the panel at k0) and b (b: row k0 of the tile's columns). PART: the last B vector is loaded
 * masked (in place, past the end of the row). */
static inline __attribute__((always_inline)) void lw_cv_tile(const int NV, const int PART, const int PF,
                                                             const lw_cv_job *j, long kc,
                                                             const float *restrict a,
                                                             const float *restrict b, int mr, long i0,
                                                             long j0, long n, int first, int last) {
    const long bs = j->bs, tail = n - (NV - 1) * LW_VEC;
    lw_vf acc[LW_CV_MR][LW_CV_NVMAX];
    _Pragma("GCC unroll 16") for (int i = 0; i < LW_CV_MR; i++)
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] = (lw_vf){0};
    for (long k = 0; k < kc; k++) {
        lw_vf bv[LW_CV_NVMAX];
        if (PF) {
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)
                __builtin_prefetch(b + LW_MIN(k + LW_CV_PFD, kc - 1) * bs + v * LW_VEC, 0, 3);
        }
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)
            bv[v] = PART && v == NV - 1 ? lw_load_part(b + k * bs + v * LW_VEC, tail)
                                        : lw_load(b + k * bs + v * LW_VEC);
        _Pragma("GCC unroll 16") for (int i = 0; i < LW_CV_MR; i++) {
            const lw_vf ai = lw_splat(a[k * LW_CV_MR + i]);
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] += ai * bv[v];
        }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < LW_CV_MR; i++) {
        if (i >= mr) break;
        const long row = i0 + i;
        float *yr = j->y + row * j->N + j0;
        const float *rr = j->res ? j->res + row * j->e->res_rs + j0 * j->e->res_cs : NULL;
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {
            const int full = v < NV - 1 || tail == LW_VEC;
            lw_vf t = acc[i][v];
            if (!first) t += full ? lw_load(yr + v * LW_VEC) : lw_load_part(yr + v * LW_VEC, tail);
            if (last) t = lw_cv_finish(j, t, row, rr && j->e->res_cs ? rr + v * LW_VEC : rr, full, tail);
            if (full) lw_store(yr + v * LW_VEC, t);
            else lw_store_part(yr + v * LW_VEC, t, tail);
        }
    }
}

/* Column tiles [c0, c1) x row panels [m0, m1) of a job over K range [ka, kz): K block by K block, each B
 * tile block reused by every row panel while it is in L1; the epilogue after the last block when `finish`,
 * else the raw sums are stored. */
static void lw_cv_range(const lw_cv_job *j, long c0, long c1, long m0, long m1, long ka, long kz, int finish) {
    for (long k0 = ka; k0 < kz; k0 += j->kb) {
        const long kc = LW_MIN(j->kb, kz - k0);
        const int first = k0 == ka, last = finish && k0 + kc >= kz;
        for (long c = c0; c < c1; c++) {
            const long j0 = c * j->tw, n = LW_MIN(j->tw, j->N - j0);
            const int nv = (int)LW_CDIV(n, LW_VEC), part = j->inplace && n % LW_VEC != 0;
            const float *b = (j->inplace ? j->b + j0 : j->b + c * j->K * j->bs) + k0 * j->bs;
            for (long mp = m0; mp < m1; mp++) {
                const int pf = j->inplace && mp == m0 && j->K >= LW_CV_PFK;
                const long i0 = mp * LW_CV_MR;
                const int mr = (int)LW_MIN((long)LW_CV_MR, j->M - i0);
                const float *a = j->a + (mp * j->K + k0) * LW_CV_MR;
#define LW_CV_CALL(NV, PART)                                                                                \
    do {                                                                                                    \
        if (pf) lw_cv_tile(NV, PART, 1, j, kc, a, b, mr, i0, j0, n, first, last);                           \
        else lw_cv_tile(NV, PART, 0, j, kc, a, b, mr, i0, j0, n, first, last);                              \
    } while (0)
                if (part) {
                    if (nv == 1) LW_CV_CALL(1, 1);
                    else if (nv == 2) LW_CV_CALL(2, 1);
                    else LW_CV_CALL(LW_CV_NV, 1);
                } else {
                    if (nv == 1) LW_CV_CALL(1, 0);
                    else if (nv == 2) LW_CV_CALL(2, 0);
#if LW_CV_NVMAX >= 3
                    else if (nv == 3) LW_CV_CALL(3, 0);
#endif
                    else LW_CV_CALL(LW_CV_NVMAX, 0);
                }
#undef LW_CV_CALL
            }
        }
    }
}

static void lw_cv_block(const lw_cv_job *j, long c0, long c1, long m0, long m1) {
    lw_cv_range(j, c0, c1, m0, m1, 0, j->K, 1);
}

/* K split in two halves (LW_CV_KSPLIT): output columns [j0, j0 + n) of rows [0, M) from the two halves' raw
 * sums, one in j->y and one in `other` (same layout), then the epilogue: t = P1 + P0 as lw_cv_tile's last
 * block adds its sums to the stored first block's, so every thread count gives the same bits. */
static void lw_cv_combine(const lw_cv_job *j, const float *other, int y_second, long j0, long n) {
    for (long row = 0; row < j->M; row++) {
        float *yr = j->y + row * j->N + j0;
        const float *o = other + row * j->N + j0;
        const float *rr = j->res ? j->res + row * j->e->res_rs + j0 * j->e->res_cs : NULL;
        for (long c = 0; c < n; c += LW_VEC) {
            const int full = c + LW_VEC <= n;
            const long tail = n - c;
            const lw_vf yv = full ? lw_load(yr + c) : lw_load_part(yr + c, tail);
            const lw_vf ov = full ? lw_load(o + c) : lw_load_part(o + c, tail);
            lw_vf t = y_second ? yv : ov; /* the second half's sums, */
            t += y_second ? ov : yv;      /* plus the first half's */
            t = lw_cv_finish(j, t, row, rr && j->e->res_cs ? rr + c : rr, full, tail);
            if (full) lw_store(yr + c, t);
            else lw_store_part(yr + c, t, tail);
        }
    }
}

/* Tasks [0, tasks) inside a parallel region: contiguous equal shares when the thread count divides them
 * (even: a thread's tasks stay together), else one at a time as threads come free. */
#define LW_OMP_FOR_TASKS(even, tasks, TASK)                                                                 \
    do {                                                                                                    \
        if (even) {                                                                                         \
            _Pragma("omp for schedule(static)") for (long t_ = 0; t_ < (tasks); t_++) TASK(t_);             \
        } else {                                                                                            \
            _Pragma("omp for schedule(dynamic, 1)") for (long t_ = 0; t_ < (tasks); t_++) TASK(t_);         \
        }                                                                                                   \
    } while (0)

/* Pointwise convs that reduce many channels to few (256 < K <= 640 and K >= 4 M: MobileNetV2's projections
 * at 14x14, which read the output of a depthwise conv) run K in two halves whatever the thread count: the
 * first half's sums are stored, the second's added (lw_cv_tile's K blocks, or lw_cv_combine). At an even
 * thread count > 1 the first half of the threads sums the first half of the input channels over all
 * positions and the others the second half, so each reads the channels that the depthwise conv's static
 * split (lw_dwg_thread) left in its core's cache; the half owned by a column's combining thread goes to the
 * output, the other to the workspace ([M][P] floats), and after a barrier each thread combines its share of
 * the columns. emit_linear.py's conv_ksplit mirrors the rule. Measured: in MobileNetV2 at 2 threads a
 * kernel reading another core's writes ran 30-40% slower than the same kernel on data its core wrote (384->64
 * at 14x14: 140 -> 101 kcycles); the model 2.8% faster at 2 threads, unchanged at 1. Splitting K at 144 and
 * 192 too measured 1% faster again at 2 threads but 1.2% slower at 1 (an extra K block per tile). */
#define LW_CV_KSPLIT(inplace, G, K, Mg) ((inplace) && (G) == 1 && (K) > LW_CV_KC && (K) >= 4 * (Mg) && (K) <= 640)

static void lw_conv2d_ksplit(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                             const float *res, long res_ns, float *y, float *part, const lw_epilogue *e,
                             long kb) {
    const long K = g->C, M = g->M, P = g->OH * g->OW, tw = LW_CV_NV * LW_VEC, ct = LW_CDIV(P, tw);
    const long mp = LW_CDIV(M, LW_CV_MR), nh = nt / 2;
    for (long n = 0; n < g->N; n++) {
        const lw_cv_job jy = {e, w, x + n * K * P, P, tw, 1, M, P, K, kb, y + n * M * P, bias,
                              res ? res + n * res_ns : NULL};
        lw_cv_job jp = jy;
        jp.y = part;
#define LW_KS_OWNER_HALF(c) ((((c) + 1) * nt - 1) / ct * 2 / nt) /* half of the thread combining column c */
#pragma omp parallel num_threads(nt)
        {
            const long tid = omp_get_thread_num(), h = tid / nh, th = tid % nh;
            const long ka = h * kb, kz = LW_MIN(K, ka + kb);
            for (long c = th * ct / nh; c < (th + 1) * ct / nh; c++)
                lw_cv_range(LW_KS_OWNER_HALF(c) == h ? &jy : &jp, c, c + 1, 0, mp, ka, kz, 0);
#pragma omp barrier
            for (long c = tid * ct / nt; c < (tid + 1) * ct / nt; c++)
                lw_cv_combine(&jy, part, LW_KS_OWNER_HALF(c) == 1, c * tw, LW_MIN(tw, P - c * tw));
        }
#undef LW_KS_OWNER_HALF
    }
}

/* Convolution through the conv GEMM: w is packed A per group ([G][ceil(Mg/MR)][K][MR]). ws holds the
 * packed im2col columns of one image ([G][ceil(P/NR)][K][NR]); 1x1 stride-1 unpadded convs need none. */
static void lw_conv2d(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                      const float *res, long res_ns, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long G = g->G, Cg = g->C / G, Mg = g->M / G, K = Cg * g->KH * g->KW, P = g->OH * g->OW;
    const long HW = g->H * g->W;
    const int inplace = g->KH == 1 && g->KW == 1 && g->SH == 1 && g->SW == 1 && g->PH == 0 && g->PW == 0
                        && g->OH == g->H && g->OW == g->W;
    const long tw = inplace ? LW_CV_NV * LW_VEC : LW_NR, ct = LW_CDIV(P, tw), mp = LW_CDIV(Mg, LW_CV_MR);
    const long a_size = mp * LW_CV_MR * K, b_size = LW_CDIV(P, LW_NR) * LW_NR * K;
    float *col = (float *)(ws + LW_ALIGN64((size_t)G * 64));
    const int ksplit = LW_CV_KSPLIT(inplace, G, K, Mg);
    const long kb = ksplit ? (K + 1) / 2 : LW_CV_KC;
    if (ksplit && nt > 1 && nt % 2 == 0 && ct >= nt) {
        lw_conv2d_ksplit(nt, g, x, w, bias, res, res_ns, y, col, e, kb);
        return;
    }
    /* Tasks: (group, column block, row block). Columns per task: all of them, or fewer when the partial
     * sums of several K blocks would not stay in L2, or when the threads need more tasks. */
    long cb = ct, mb = mp;
    if (K > kb) cb = LW_MAX(1, LW_MIN(ct, LW_CV_BLOCK / (Mg * tw)));
    if (!inplace) cb = LW_MIN(cb, LW_FUSED_PANELS);
    const int msplit = nt > 1 && inplace && G == 1 && Mg > K && K <= LW_CV_KC
                       && mp >= nt && K * P <= LW_CV_MSPLIT;
    if (msplit) {
        mb = LW_CDIV(mp, nt);
    } else if (nt > 1) {
        cb = LW_MIN(cb, LW_CDIV(ct, 4L * nt));
        while (G * LW_CDIV(ct, cb) * LW_CDIV(mp, mb) < 2L * nt && mb > 1) mb = LW_CDIV(mb, 2);
    }
    cb = LW_CDIV(ct, LW_CDIV(ct, cb));
    mb = LW_CDIV(mp, LW_CDIV(mp, mb));
    const long cblocks = LW_CDIV(ct, cb), mblocks = LW_CDIV(mp, mb), tasks = G * cblocks * mblocks;
    /* im2col tasks build their own column panels and consume them while they are in cache, when there
     * are enough of them for every thread; otherwise (small images, big weights) im2col everything first. */
    const int fused = !inplace && mblocks == 1 && G * cblocks >= 2L * nt;
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * HW;
        if (!inplace && !fused) {
            const long np = LW_CDIV(P, LW_NR);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && G * np > 1)
            for (long t = 0; t < G * np; t++)
                lw_im2col_panels(g, xn + (t / np) * Cg * HW, col + (t / np) * b_size, t % np, t % np + 1);
        }
#define LW_CV_TASK(t)                                                                                       \
    do {                                                                                                    \
        const long gi = (t) / (cblocks * mblocks), r = (t) % (cblocks * mblocks);                          \
        const long c0 = (r / mblocks) * cb, c1 = LW_MIN(ct, c0 + cb), m0 = (r % mblocks) * mb;              \
        const lw_cv_job j = {                                                                               \
            e, w + gi * a_size, inplace ? xn + gi * Cg * HW : col + gi * b_size, inplace ? HW : LW_NR, tw,  \
            inplace, Mg, P, K, kb, y + (n * g->M + gi * Mg) * P, bias ? bias + gi * Mg * e->bias_rs : NULL, \
            res ? res + n * res_ns + gi * Mg * e->res_rs : NULL,                                            \
        };                                                                                                  \
        if (fused) lw_im2col_panels(g, xn + gi * Cg * HW, col + gi * b_size, c0, c1);                       \
        lw_cv_block(&j, c0, c1, m0, LW_MIN(mp, m0 + mb));                                                   \
    } while (0)
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks > 1)
        LW_OMP_FOR_TASKS(msplit, tasks, LW_CV_TASK);
#undef LW_CV_TASK
    }
}

/* --- transposed conv GEMM (small planes) ---------------------------------------------------------------- */

/* For planes of few positions (7x7, 14x14) the position tiles above waste columns (49 positions fill 64)
 * and the weights are the broadcast operand. The transposed product computes out^T[p][co] instead: tiles
 * of LW_CT_R positions (broadcast from B rows, read in place for pointwise convs or from a row-major
 * [K][P] im2col) x LW_CT_NC output channels (weights packed [ceil(M/NC)][K][NC], zero-padded: pack.py's
 * pack_conv_weights_t), so no position is wasted (7 divides 49 and 196) and each weight vector feeds
 * LW_CT_R FMAs. Partial sums stay in a small L1 buffer across K blocks; the epilogue runs there and the
 * tile is written transposed into the NCHW output. */
#if LW_VEC == 16
#define LW_CT_R 7 /* positions per tile: 21 accumulators */
#else
#define LW_CT_R 4
#endif
#define LW_CT_NV 3
#define LW_CT_NC (LW_CT_NV * LW_VEC) /* output channels per tile */
#define LW_CT_KC 128                 /* K block: the weights' block (KC x NC) stays in L1 */
#define LW_CT_TILES 16               /* most position tiles per task (its partial sums: 16 * R * NC floats) */
#define LW_CT_MASKS 1024             /* most im2col load masks lw_conv2d_t precomputes */

/* part[r][:] (+)= sum over k < kc of b[k * bs + r] * w[k][:], for r < R; the first npf steps prefetch one
 * cache line each, pf + 16 k, into L2. */
static inline __attribute__((always_inline)) void lw_ct_tile(const int R, const int NV, long kc,
                                                             const float *restrict w, const float *restrict b,
                                                             long bs, float *restrict part, int first,
                                                             const float *pf, long npf) {
    lw_vf acc[LW_CT_R][LW_CT_NV];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)
            acc[r][v] = first ? (lw_vf){0} : lw_load(part + r * LW_CT_NC + v * LW_VEC);
    for (long k = 0; k < kc; k++) {
        if (k < npf) __builtin_prefetch(pf + 16 * k, 0, 2);
        lw_vf wv[LW_CT_NV];
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)
            wv[v] = lw_load(w + k * LW_CT_NC + v * LW_VEC);
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            const lw_vf br = lw_splat(b[k * bs + r]);
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] += br * wv[v];
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)
            lw_store(part + r * LW_CT_NC + v * LW_VEC, acc[r][v]);
}

typedef struct {
    const lw_epilogue *e;
    const float *w;    /* the group's transposed packed weights [ceil(M/NC)][K][NC] */
    const float *b;    /* B rows: element (k, p) at b[k * bs + p] */
    long bs, M, P, K;
    float *y;          /* the group's output [M][P] */
    const float *bias; /* NULL, or the group's first channel's bias */
    const float *res;  /* NULL, or the group's first channel's residual */
} lw_ct_job;

/* Output channel panel cp x positions [q0, q1) of a job. */
static void lw_ct_block(const lw_ct_job *j, long cp, long q0, long q1) {
    float part[LW_CT_TILES * LW_CT_R * LW_CT_NC] __attribute__((aligned(64)));
    const lw_epilogue *e = j->e;
    const float *wp = j->w + cp * j->K * LW_CT_NC;
    /* The weights stream from memory (each is used P times): while a K block runs, its tiles prefetch the
     * next block's weights (the next channel panel's first block after the last), a share each. */
    const long panels = LW_CDIV(j->M, LW_CT_NC), ntiles = LW_CDIV(q1 - q0, LW_CT_R);
    /* vectors of real channels in this panel */
    const long nv = LW_CDIV(LW_MIN((long)LW_CT_NC, j->M - cp * LW_CT_NC), LW_VEC);
    for (long k0 = 0; k0 < j->K; k0 += LW_CT_KC) {
        const long kc = LW_MIN((long)LW_CT_KC, j->K - k0);
        const float *w = wp + k0 * LW_CT_NC, *b = j->b + k0 * j->bs;
        const int more = k0 + kc < j->K;
        const float *next = more ? w + kc * LW_CT_NC : cp + 1 < panels ? wp + j->K * LW_CT_NC : NULL;
        const long lines = next ? LW_MIN((long)LW_CT_KC, j->K - (more ? k0 + kc : 0)) * LW_CT_NC / 16 : 0;
        const long share = LW_CDIV(lines, ntiles);
        for (long p = q0; p < q1; p += LW_CT_R) {
            float *pt = part + (p - q0) * LW_CT_NC;
            const long r = LW_MIN((long)LW_CT_R, q1 - p), ti = (p - q0) / LW_CT_R;
            const float *pf = next ? next + ti * share * 16 : w;
            const long npf = LW_MAX(0, LW_MIN(share, LW_MIN(kc, lines - ti * share)));
            /* a last panel of 16 or 32 channels (MobileNetV2's 160 = 3 x 48 + 16) computes only those */
            if (nv < LW_CT_NV && r == LW_CT_R) {
                if (nv == 1) lw_ct_tile(LW_CT_R, 1, kc, w, b + p, j->bs, pt, k0 == 0, pf, npf);
                else lw_ct_tile(LW_CT_R, 2, kc, w, b + p, j->bs, pt, k0 == 0, pf, npf);
                continue;
            }
            switch (r) {
#define LW_CT_CASE(R) case R: lw_ct_tile(R, LW_CT_NV, kc, w, b + p, j->bs, pt, k0 == 0, pf, npf); break;
            LW_CT_CASE(1) LW_CT_CASE(2) LW_CT_CASE(3)
#if LW_CT_R > 4
            LW_CT_CASE(4) LW_CT_CASE(5) LW_CT_CASE(6)
#endif
            default: lw_ct_tile(LW_CT_R, LW_CT_NV, kc, w, b + p, j->bs, pt, k0 == 0, pf, npf); break;
#undef LW_CT_CASE
            }
        }
    }
    /* epilogue over the partial sums, then the transposed store */
    const long c0 = cp * LW_CT_NC, nc = LW_MIN((long)LW_CT_NC, j->M - c0);
    float bv[LW_CT_NC] __attribute__((aligned(64))) = {0};
    if (j->bias)
        for (long c = 0; c < nc; c++) bv[c] = j->bias[(c0 + c) * e->bias_rs];
    for (long p = q0; p < q1; p++) {
        float *pt = part + (p - q0) * LW_CT_NC;
        float rv[LW_CT_NC] __attribute__((aligned(64)));
        if (j->res)
            for (long c = 0; c < LW_CT_NC; c++)
                rv[c] = c < nc ? j->res[(c0 + c) * e->res_rs + p * e->res_cs] : 0.0f;
        for (int v = 0; v < nv; v++) {
            lw_vf t = lw_load(pt + v * LW_VEC);
            if (e->alpha != 1.0f) t *= lw_splat(e->alpha);
            if (j->bias) t += lw_splat(e->bias_scale) * lw_load(bv + v * LW_VEC);
            if (j->res) t += lw_load(rv + v * LW_VEC);
            lw_store(pt + v * LW_VEC, lw_vactivate(t, e->act, e->p0, e->p1));
        }
    }
    for (long c = 0; c < nc; c++) {
        float *yc = j->y + (c0 + c) * j->P;
        for (long p = q0; p < q1; p++) yc[p] = part[(p - q0) * LW_CT_NC + c];
    }
}

/* d[o] = row[iw0 + o * sw] for o < n, zero where that column is outside [0, W) or row is NULL. */
static inline void lw_ct_im2col_row(float *d, const float *row, long iw0, long sw, long W, long n) {
#ifdef LW_CONV_AVX512
    if (sw <= 2) { /* masked vector loads: short rows (7, 14 columns) cost no calls and no branches */
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for (long o = 0; o < n; o += 16) {
            const long c = iw0 + o * sw;
            __m512 v = _mm512_setzero_ps();
            if (row) {
                v = _mm512_maskz_loadu_ps(lw_mask_range(-c, W - c), lw_addr(row, c));
                if (sw == 2) {
                    const __m512 hi =
                        _mm512_maskz_loadu_ps(lw_mask_range(-c - 16, W - c - 16), lw_addr(row, c + 16));
                    v = _mm512_permutex2var_ps(v, even, hi);
                }
            }
            _mm512_mask_storeu_ps(d + o, lw_mask_range(0, n - o), v);
        }
        return;
    }
#endif
    if (row) {
        lw_im2col_run(d, row, iw0, sw, W, n);
    } else {
        for (long o = 0; o < n; o++) d[o] = 0.0f;
    }
}

/* Convolution through the transposed conv GEMM: w is the transposed packed weights per group
 * ([G][ceil(Mg/NC)][K][NC]); ws holds a row-major im2col ([G][K][P]) unless the conv is 1x1, stride 1 and
 * unpadded (read in place). */
static void lw_conv2d_t(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                        const float *res, long res_ns, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long G = g->G, Cg = g->C / G, Mg = g->M / G, K = Cg * g->KH * g->KW, P = g->OH * g->OW;
    const long HW = g->H * g->W, taps = g->KH * g->KW;
    const int inplace = g->KH == 1 && g->KW == 1 && g->SH == 1 && g->SW == 1 && g->PH == 0 && g->PW == 0
                        && g->OH == g->H && g->OW == g->W;
    const long cps = LW_CDIV(Mg, LW_CT_NC), w_size = cps * LW_CT_NC * K;
    float *col = (float *)(ws + LW_ALIGN64((size_t)G * 64));
    /* Tasks: (group, channel panel, position block); position blocks of whole tiles, at most LW_CT_TILES,
     * more of them when the threads need more tasks. */
    const long tiles = LW_CDIV(P, LW_CT_R);
    long pb = LW_CDIV(tiles, LW_CDIV(tiles, LW_CT_TILES));
    if (nt > 1)
        while (G * cps * LW_CDIV(tiles, pb) < 4L * nt && pb > 1) pb = LW_CDIV(pb, 2);
    const long qblocks = LW_CDIV(tiles, pb), tasks = G * cps * qblocks;
#ifdef LW_CONV_AVX512
    /* Stride 1 and OW == W: position p of tap (kh, kw) reads x[p + shift], valid per a mask that depends
     * only on the tap, precomputed here (small planes: at most LW_CT_MASKS vectors in all). */
    __mmask16 mask_table[LW_CT_MASKS];
    long shift[LW_INDEX_TAPS];
    const long pv = LW_CDIV(P, 16);
    const __mmask16 *masks = NULL;
    if (!inplace && g->SH == 1 && g->SW == 1 && g->OW == g->W && taps <= LW_INDEX_TAPS
        && taps * pv <= LW_CT_MASKS) {
        for (long kh = 0, k = 0; kh < g->KH; kh++)
            for (long kw = 0; kw < g->KW; kw++, k++) {
                const long dh = kh * g->DH - g->PH, dw = kw * g->DW - g->PW;
                shift[k] = dh * g->W + dw;
                for (long v = 0; v < pv; v++) {
                    unsigned m = 0;
                    for (long l = 0; l < 16; l++) {
                        const long p = v * 16 + l, ih = p / g->OW + dh, iw = p % g->OW + dw;
                        if (p < P && ih >= 0 && ih < g->H && iw >= 0 && iw < g->W) m |= 1u << l;
                    }
                    mask_table[k * pv + v] = (__mmask16)m;
                }
            }
        masks = mask_table;
    }
#endif
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * HW;
        /* one parallel region for the im2col and the tasks (one fork and join fewer, as lw_conv2d_d) */
#pragma omp parallel num_threads(nt) if (nt > 1 && (tasks > 1 || (!inplace && G * Cg > 1)))
        {
            if (!inplace) {
#pragma omp for schedule(static)
                for (long t = 0; t < G * Cg; t++) {
                    const float *xc = xn + t * HW;
                    float *d = col + t * taps * P;
#ifdef LW_CONV_AVX512
                    if (masks) { /* stride 1, rows as wide as the input's: each tap's row is a masked shift */
                        for (long k = 0; k < taps; k++, d += P)
                            for (long v = 0; v < pv; v++)
                                _mm512_mask_storeu_ps(d + v * 16, lw_mask_range(0, P - v * 16),
                                                      _mm512_maskz_loadu_ps(masks[k * pv + v],
                                                                            lw_addr(xc, shift[k] + v * 16)));
                        continue;
                    }
#endif
                    for (long kh = 0; kh < g->KH; kh++)
                        for (long kw = 0; kw < g->KW; kw++, d += P) {
                            for (long oh = 0; oh < g->OH; oh++) {
                                const long ih = oh * g->SH - g->PH + kh * g->DH;
                                lw_ct_im2col_row(d + oh * g->OW, ih >= 0 && ih < g->H ? xc + ih * g->W : NULL,
                                                 kw * g->DW - g->PW, g->SW, g->W, g->OW);
                            }
                        }
                }
            }
#pragma omp for schedule(dynamic, 1)
            for (long t = 0; t < tasks; t++) {
                const long gi = t / (cps * qblocks), r = t % (cps * qblocks), cp = r / qblocks;
                const long q0 = (r % qblocks) * pb * LW_CT_R, q1 = LW_MIN(P, q0 + pb * LW_CT_R);
                const lw_ct_job j = {
                    e, w + gi * w_size, inplace ? xn + gi * Cg * HW : col + gi * K * P, inplace ? HW : P,
                    Mg, P, K, y + (n * g->M + gi * Mg) * P, bias ? bias + gi * Mg * e->bias_rs : NULL,
                    res ? res + n * res_ns + gi * Mg * e->res_rs : NULL,
                };
                lw_ct_block(&j, cp, q0, q1);
            }
        }
    }
}

/* --- direct conv over phase grids (no im2col) -------------------------------------------------------- */

/* The input is rewritten once per call into phase grids: for stride (SH, SW) each channel becomes SH * SW
 * zero-padded planes, phase (ph, pw) holding padded input rows i * SH + ph and columns j * SW + pw, each
 * row Wq = OW + ((KW - 1) * DW) / SW columns wide. Output position (oh, ow) is grid position
 * q = oh * Wq + ow, and tap (kh, kw) of every position reads its phase plane at q plus a constant offset
 * (toff), so the conv GEMM's B row k = (c, kh, kw) is the grid itself, shifted: no im2col (9 copies of the
 * input for a 3x3 conv; a stride-2 7x7 stem's copy was a third of its time). The micro-kernel computes
 * LW_CV_MR channels x up to LW_CV_NV vectors of consecutive grid positions; the Wq - OW positions past each
 * output row read the next row (their results are discarded): 2 of 58 columns at 56x56, 2 of 9 at 7x7.
 * The epilogue stores each vector as the runs of lanes that are real outputs (lw_dc_seg). Every output
 * is reduced over the whole K in one register, in the same order whatever the thread count. */
#define LW_DC_SEGS 6 /* most output runs per vector (lw_dc_geom requires Wq >= 4 for 16-lane vectors) */

typedef struct {
    long Wq, Hq, nph, cs, Q, nvec, slack; /* grid row width, rows per phase plane, phases, floats per channel,
                                             grid positions computed (OH * Wq), their vectors, zeroed tail */
} lw_dc_geom;

static lw_dc_geom lw_dc_geom_of(const lw_conv_geom *g) {
    lw_dc_geom d;
    const long eh = (g->KH - 1) * g->DH / g->SH, ew = (g->KW - 1) * g->DW / g->SW;
    d.Wq = g->OW + ew;
    d.Hq = g->OH + eh;
    d.nph = g->SH * g->SW;
    d.cs = d.nph * d.Hq * d.Wq;
    d.Q = g->OH * d.Wq;
    d.nvec = LW_CDIV(d.Q, LW_VEC);
    d.slack = LW_CDIV(ew + LW_CV_NV * LW_VEC, 16) * 16;
    return d;
}

/* The phase grids of one channel xc ([H][W]) at dst ([nph][Hq][Wq]), only those of the phases in `used`
 * (bit ph * SW + pw; phases past the 64th always): a strided 1x1 conv reads one of its SH * SW planes (the
 * ResNet shortcuts' copy took a third of their time). The planes left unwritten (stale workspace) are read
 * only by lanes past a plane's last grid position, which are never stored. */
static void lw_dc_transform(const lw_conv_geom *g, const lw_dc_geom *d, const float *xc, float *dst,
                            unsigned long used, long i0, long i1) {
    for (long ph = 0; ph < g->SH; ph++)
        for (long pw = 0; pw < g->SW; pw++, dst += d->Hq * d->Wq) {
            const long bit = ph * g->SW + pw;
            if (bit < 64 && !(used >> bit & 1)) continue;
            for (long i = i0; i < i1; i++) {
                const long r = i * g->SH + ph - g->PH;
                lw_ct_im2col_row(dst + i * d->Wq, r < 0 || r >= g->H ? NULL : xc + r * g->W, pw - g->PW, g->SW, g->W,
                                 d->Wq);
            }
        }
}

/* Each tap's offset in a channel's grids from an output's grid position q (toff); returns the phases some
 * tap reads (bit ph * SW + pw; phases past the 64th are always written). */
static unsigned long lw_dc_taps(const lw_conv_geom *g, const lw_dc_geom *d, long *toff) {
    unsigned long used = 0;
    for (long kh = 0, k = 0; kh < g->KH; kh++)
        for (long kw = 0; kw < g->KW; kw++, k++) {
            const long rh = kh * g->DH, rw = kw * g->DW, bit = (rh % g->SH) * g->SW + rw % g->SW;
            toff[k] = bit * d->Hq * d->Wq + (rh / g->SH) * d->Wq + rw / g->SW;
            if (bit < 64) used |= 1UL << bit;
        }
    return used;
}

/* A run of lanes [lo, hi) of a vector at grid position qa: lane l is output position qa + l + shift. */
typedef struct {
    long shift;
    int lo, hi;
} lw_dc_seg;

typedef struct {
    int n;
    lw_dc_seg s[LW_DC_SEGS];
} lw_dc_segs;

static inline void lw_dc_segs_of(const lw_conv_geom *g, const lw_dc_geom *d, long qa, lw_dc_segs *out) {
    out->n = 0;
    for (long oh = qa / d->Wq; oh < g->OH && oh * d->Wq < qa + LW_VEC; oh++) {
        const long lo = LW_MAX(0, oh * d->Wq - qa), hi = LW_MIN((long)LW_VEC, oh * d->Wq + g->OW - qa);
        if (hi <= lo) continue;
        out->s[out->n++] = (lw_dc_seg){oh * (g->OW - d->Wq), (int)lo, (int)hi};
    }
}

/* The lanes of s read from base + qa + lane + shift, zero elsewhere. */
static inline lw_vf lw_dc_gather(const float *base, long qa, const lw_dc_segs *s) {
#ifdef LW_CONV_AVX512
    __m512 v = _mm512_setzero_ps();
    for (int i = 0; i < s->n; i++)
        v = _mm512_mask_loadu_ps(v, lw_mask_range(s->s[i].lo, s->s[i].hi), lw_addr(base, qa + s->s[i].shift));
    return (lw_vf)v;
#else
    float t[LW_VEC] = {0};
    for (int i = 0; i < s->n; i++)
        for (int l = s->s[i].lo; l < s->s[i].hi; l++) t[l] = base[qa + l + s->s[i].shift];
    return lw_load(t);
#endif
}

/* Store the lanes of s of v at base + qa + lane + shift. */
static inline void lw_dc_scatter(float *base, lw_vf v, long qa, const lw_dc_segs *s) {
#ifdef LW_CONV_AVX512
    for (int i = 0; i < s->n; i++)
        _mm512_mask_storeu_ps((void *)lw_addr(base, qa + s->s[i].shift),
                              lw_mask_range(s->s[i].lo, s->s[i].hi), (__m512)v);
#else
    float t[LW_VEC];
    lw_store(t, v);
    for (int i = 0; i < s->n; i++)
        for (int l = s->s[i].lo; l < s->s[i].hi; l++) base[qa + l + s->s[i].shift] = t[l];
#endif
}

typedef struct {
    const lw_epilogue *e;
    const float *a;    /* the group's packed weights [ceil(M/LW_CV_MR)][K][LW_CV_MR] */
    const float *x;    /* the group's phase grids [C/G][cs] */
    const long *toff;  /* per tap: its offset in a channel's grids from the position's q */
    long taps, cs, M, K, P;
    float *y;          /* the group's output [M][P] */
    const float *bias; /* NULL, or the group's first channel's bias */
    const float *res;  /* NULL, or the group's first channel's residual */
} lw_dc_job;

/* Rows [i0, i0 + mr) x NV vectors at grid position q0 over channels [0, C) (a: the row panel), then the
 * epilogue and the store of the output runs sg; prefetches npf cache lines at pf into L2 on the way. */
static inline __attribute__((always_inline)) void lw_dc_tile(const int NV, const lw_dc_job *j, long C,
                                                             const float *restrict a, long q0, int mr,
                                                             long i0, const lw_dc_segs *sg, const float *pf,
                                                             long npf) {
    const long taps = j->taps, cs = j->cs;
    const long *toff = j->toff;
    lw_vf acc[LW_CV_MR][LW_CV_NV];
    _Pragma("GCC unroll 16") for (int i = 0; i < LW_CV_MR; i++)
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] = (lw_vf){0};
    const float *xb = j->x + q0;
    for (long c = 0; c < C; c++, xb += cs) {
        for (long k = c * taps; k < LW_MIN(npf, (c + 1) * taps); k++) /* a line per tap, npf at pf */
            __builtin_prefetch(pf + 16 * k, 0, 2);
        for (long t = 0; t < taps; t++, a += LW_CV_MR) {
            const float *restrict src = xb + toff[t];
            lw_vf bv[LW_CV_NV];
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bv[v] = lw_load(src + v * LW_VEC);
            _Pragma("GCC unroll 16") for (int i = 0; i < LW_CV_MR; i++) {
                const lw_vf ai = lw_splat(a[i]);
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] += ai * bv[v];
            }
        }
    }
    const lw_epilogue *e = j->e;
    _Pragma("GCC unroll 16") for (int i = 0; i < LW_CV_MR; i++) {
        if (i >= mr) break;
        const long row = i0 + i;
        float *yr = j->y + row * j->P;
        const float bi = j->bias ? e->bias_scale * j->bias[row * e->bias_rs] : 0.0f;
        const float *rr = j->res ? j->res + row * e->res_rs : NULL;
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {
            const long qa = q0 + v * LW_VEC;
            lw_vf t = acc[i][v];
            if (e->alpha != 1.0f) t *= lw_splat(e->alpha);
            if (j->bias) t += lw_splat(bi);
            if (rr) t += e->res_cs == 0 ? lw_splat(rr[0]) : lw_dc_gather(rr, qa, sg + v);
            t = lw_vactivate(t, e->act, e->p0, e->p1);
            lw_dc_scatter(yr, t, qa, sg + v);
        }
    }
}

/* One tile of nv vectors at grid position q0 (output runs sg) x rows [i0, i0 + mr) over the whole K (a: the
 * row panel). */
static void lw_dc_tile_k(const lw_dc_job *j, const float *a, long q0, int nv, int mr, long i0,
                         const lw_dc_segs *sg, const float *pf, long npf) {
    const long C = j->K / j->taps;
    if (nv == LW_CV_NV) lw_dc_tile(LW_CV_NV, j, C, a, q0, mr, i0, sg, pf, npf);
    else if (nv == 1) lw_dc_tile(1, j, C, a, q0, mr, i0, sg, pf, npf);
#if LW_CV_NV > 2
    else lw_dc_tile(2, j, C, a, q0, mr, i0, sg, pf, npf);
#endif
}

#define LW_DC_L1_WEIGHTS 8192 /* most weight floats of a task's row panels kept in L1 across its tiles */

/* Row panels [m0, m1) x column tiles [t0, t1) (tile t: vectors [t * nvec / tiles, (t + 1) * nvec / tiles))
 * of a job, each tile over the whole K in registers (no partial sums go through the output). When the
 * task's weights fit in L1 (short K: MobileNetV2's stem; ResNet's 7x7 stem measured 6% slower so),
 * tile by tile, every row panel in turn; otherwise row panel by row panel, so its weights stay in L1 (L2
 * past 128 channels of 3x3) across the tiles, while the grid rows a tile reads (a few hundred bytes per
 * channel) come from L2, and the tiles prefetch the next panel's weights. */
static void lw_dc_block(const lw_dc_job *j, const lw_conv_geom *g, const lw_dc_geom *d, long tiles, long t0,
                        long t1, long m0, long m1) {
    const int tiles_outer = (m1 - m0) * j->K * LW_CV_MR <= LW_DC_L1_WEIGHTS;
    const long outer = tiles_outer ? t1 - t0 : m1 - m0, inner = tiles_outer ? m1 - m0 : t1 - t0;
    lw_dc_segs sg[LW_CV_NV];
    for (long o = 0; o < outer; o++)
        for (long in = 0; in < inner; in++) {
            const long t = t0 + (tiles_outer ? o : in), mp = m0 + (tiles_outer ? in : o);
            const long v0 = t * d->nvec / tiles, v1 = (t + 1) * d->nvec / tiles, q0 = v0 * LW_VEC;
            const int nv = (int)(v1 - v0);
            if (!tiles_outer || in == 0)
                for (int v = 0; v < nv; v++) lw_dc_segs_of(g, d, q0 + v * LW_VEC, sg + v);
            /* row panel by row panel: the tiles prefetch the next panel's weights, a share each */
            const long lines = tiles_outer || mp + 1 >= m1 ? 0 : j->K * LW_CV_MR / 16;
            const long share = LW_CDIV(lines, inner), done = in * share;
            const float *a = j->a + mp * j->K * LW_CV_MR;
            const long i0 = mp * LW_CV_MR;
            lw_dc_tile_k(j, a, q0, nv, (int)LW_MIN((long)LW_CV_MR, j->M - i0), i0, sg,
                         a + j->K * LW_CV_MR + done * 16, LW_MAX(0, LW_MIN(share, lines - done)));
        }
}

/* Convolution over phase grids: w is packed A per group ([G][ceil(Mg/MR)][K][MR], as for lw_conv2d); ws
 * holds the grids of one image ([C][cs], then slack zeroed floats). */
static void lw_conv2d_d(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                        const float *res, long res_ns, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long G = g->G, Cg = g->C / G, Mg = g->M / G, taps = g->KH * g->KW, K = Cg * taps, P = g->OH * g->OW;
    const long HW = g->H * g->W, mp = LW_CDIV(Mg, LW_CV_MR), a_size = mp * LW_CV_MR * K;
    const lw_dc_geom d = lw_dc_geom_of(g);
    float *grid = (float *)ws;
    long toff[LW_INDEX_TAPS];
    const unsigned long used = lw_dc_taps(g, &d, toff);
    /* Tasks: (group, column block, row block). Every task reads all the weights of its row panels and the
     * grid rows of its columns, so threads split the row panels when the weights are the larger operand
     * (deep layers: each weight is read once) and the columns otherwise. */
    const long ct = LW_CDIV(d.nvec, LW_CV_NV);
    long cb = ct, mb = mp;
    if (nt > 1 && Mg * K > Cg * d.cs) {
        mb = LW_CDIV(mp, LW_MIN(mp, 2L * nt));
        while (G * LW_CDIV(ct, cb) * LW_CDIV(mp, mb) < 2L * nt && cb > 1) cb = LW_CDIV(cb, 2);
    } else if (nt > 1) {
        cb = LW_MIN(cb, LW_CDIV(ct, 4L * nt));
        while (G * LW_CDIV(ct, cb) * LW_CDIV(mp, mb) < 2L * nt && mb > 1) mb = LW_CDIV(mb, 2);
    }
    /* Blocks of near-equal size (tiles and panels divided evenly: ct = 68 as 8 blocks of 8 or 9 tiles, not
     * 7 of 9 and one of 5); a task count that the threads divide runs as contiguous equal shares (static:
     * with dynamic scheduling blocks of 8 and 9 tiles fell 32 against 36), others dynamically. */
    long cblocks = LW_CDIV(ct, cb), mblocks = LW_CDIV(mp, mb);
    if (nt > 1 && cblocks > 1 && cblocks % nt != 0 && LW_CDIV(cblocks, nt) * nt <= ct)
        cblocks = LW_CDIV(cblocks, nt) * nt;
    const long tasks = G * cblocks * mblocks;
    const int even = nt > 1 && tasks % nt == 0;
    for (long i = 0; i < d.slack; i++) grid[g->C * d.cs + i] = 0.0f;
    /* One parallel region per image for the transform and the tasks (one fork and join fewer: on a loaded
     * machine each costs a scheduling quantum). */
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * HW;
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks > 1)
        {
#pragma omp for schedule(static)
            for (long c = 0; c < g->C; c++) lw_dc_transform(g, &d, xn + c * HW, grid + c * d.cs, used, 0, d.Hq);
#define LW_DC_TASK(t)                                                                                       \
    do {                                                                                                    \
        const long gi = (t) / (cblocks * mblocks), r = (t) % (cblocks * mblocks);                          \
        const long cbi = r / mblocks, mbi = r % mblocks;                                                    \
        const lw_dc_job j = {                                                                               \
            e, w + gi * a_size, grid + gi * Cg * d.cs, toff, taps, d.cs, Mg, K, P,                          \
            y + (n * g->M + gi * Mg) * P, bias ? bias + gi * Mg * e->bias_rs : NULL,                        \
            res ? res + n * res_ns + gi * Mg * e->res_rs : NULL,                                            \
        };                                                                                                  \
        lw_dc_block(&j, g, &d, ct, cbi * ct / cblocks, (cbi + 1) * ct / cblocks, mbi * mp / mblocks,        \
                    (mbi + 1) * mp / mblocks);                                                              \
    } while (0)
            LW_OMP_FOR_TASKS(even, tasks, LW_DC_TASK);
#undef LW_DC_TASK
        }
    }
}

/* --- direct conv, transposed: grid positions broadcast, output channels in the vector lanes ---------- */

/* The same phase grids as lw_conv2d_d, but the micro-kernel holds LW_DT_R consecutive grid positions x
 * LW_DT_NC output channels: per (input channel, tap) it loads LW_DT_NV aligned vectors of packed weights
 * ([ceil(M/NC)][K][NC], pack.py's pack_conv_weights_t) and broadcasts LW_DT_R grid floats, never a vector
 * load at a tap's shift (lw_conv2d_d's 512-bit grid loads cross a cache line at 15 of 16 shifts). Each
 * output is reduced over the whole K in one register; the tile is transposed in registers (16x16) so the
 * epilogue and the store run along positions, as lw_conv2d_d's. AVX-512 only. */
#ifdef LW_CONV_AVX512
#define LW_DT_R 14 /* grid positions per tile */
#define LW_DT_NV 2 /* output channel vectors per tile: 28 accumulators */
#define LW_DT_NC (LW_DT_NV * 16)

/* r[i][l] <- r[l][i] for a 16x16 block of floats. */
static inline __attribute__((always_inline)) void lw_transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* r[4i + m], 128-bit lane L: column 4L + m of rows 4i .. 4i + 3 */
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int m = 0; m < 4; m++) {
        t[m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);      /* lanes 0, 2 of rows 0-3, 4-7 */
        t[4 + m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);  /* lanes 1, 3 */
        t[8 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
        t[12 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
    }
    for (int m = 0; m < 4; m++) {
        r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd);
        r[4 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xdd);
    }
}

typedef struct {
    const lw_epilogue *e;
    const lw_conv_geom *g;
    const lw_dc_geom *d;
    const float *w;    /* the group's transposed packed weights [ceil(M/NC)][K][NC] */
    const float *x;    /* the group's phase grids [C/G][cs] */
    const long *toff;  /* per tap: its offset in a channel's grids from the position's q */
    long taps, C, M, K, P;
    float *y;          /* the group's output [M][P] */
    const float *bias; /* NULL, or the group's first channel's bias */
    const float *res;  /* NULL, or the group's first channel's residual */
} lw_dt_job;

/* Grid positions [q0, q0 + R) x output channel panel cp over the whole K, then the epilogue and the store
 * of the positions that are outputs. */
static inline __attribute__((always_inline)) void lw_dt_tile(const int R, const lw_dt_job *j, long q0, long p0,
                                                             long cp, long c0, long c1, float *restrict part) {
    const long taps = j->taps, cs = j->d->cs;
    const long *toff = j->toff;
    const float *restrict w = j->w + (cp * j->K + c0 * taps) * LW_DT_NC;
    __m512 acc[LW_DT_R][LW_DT_NV];
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < LW_DT_NV; v++)
            acc[r][v] = c0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(part + (r * LW_DT_NV + v) * 16);
    const float *xb = j->x + q0 + c0 * cs;
    for (long c = c0; c < c1; c++, xb += cs) {
        for (long t = 0; t < taps; t++, w += LW_DT_NC) {
            const float *restrict src = xb + toff[t];
            __m512 wv[LW_DT_NV];
            _Pragma("GCC unroll 4") for (int v = 0; v < LW_DT_NV; v++) wv[v] = _mm512_loadu_ps(w + v * 16);
            _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {
                const __m512 b = _mm512_set1_ps(src[r]);
                _Pragma("GCC unroll 4") for (int v = 0; v < LW_DT_NV; v++)
                    acc[r][v] = _mm512_fmadd_ps(b, wv[v], acc[r][v]);
            }
        }
    }
    if (c1 < j->C) {
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)
            _Pragma("GCC unroll 4") for (int v = 0; v < LW_DT_NV; v++)
                _mm512_store_ps(part + (r * LW_DT_NV + v) * 16, acc[r][v]);
        return;
    }
    const lw_epilogue *e = j->e;
    const __mmask16 m = (__mmask16)((1u << R) - 1);
    _Pragma("GCC unroll 4") for (int v = 0; v < LW_DT_NV; v++) {
        const long c0 = cp * LW_DT_NC + v * 16;
        if (c0 >= j->M) break;
        __m512 rows[16];
        _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) rows[r] = r < R ? acc[r][v] : _mm512_setzero_ps();
        lw_transpose16(rows);
        const long nc = LW_MIN(16L, j->M - c0);
        for (long i = 0; i < nc; i++) {
            const long row = c0 + i;
            lw_vf t = (lw_vf)rows[i];
            if (e->alpha != 1.0f) t *= lw_splat(e->alpha);
            if (j->bias) t += lw_splat(e->bias_scale * j->bias[row * e->bias_rs]);
            if (j->res) {
                const float *rr = j->res + row * e->res_rs;
                t += e->res_cs == 0 ? lw_splat(rr[0]) : (lw_vf)_mm512_maskz_loadu_ps(m, rr + p0 * e->res_cs);
            }
            t = lw_vactivate(t, e->act, e->p0, e->p1);
            _mm512_mask_storeu_ps(j->y + row * j->P + p0, m, (__m512)t);
        }
    }
}

#ifndef LW_DT_TILES
#define LW_DT_TILES 32 /* tiles over which a channel block's weights stay in L1 (partial sums: 56 KiB) */
#endif
#ifndef LW_DT_KB
#define LW_DT_KB 4608  /* most weight floats per channel block: 16 channels of 3x3 (18 KiB) */
#endif

/* Panels [p0, p1) x tiles [t0, t1) (tile t: output row t / tpr, columns [t % tpr * R, + R) cut at OW, as
 * lw_dt_tiles): per panel, blocks of LW_DT_TILES tiles, each over channel blocks whose weights stay in L1
 * across the block's tiles (partial sums in an L1 buffer between channel blocks). */
static void lw_dt_block(const lw_dt_job *j, long tpr, long R, long t0, long t1, long p0, long p1) {
    float part[LW_DT_TILES * LW_DT_R * LW_DT_NC] __attribute__((aligned(64)));
    const long cb = LW_MAX(1L, LW_DT_KB / (j->taps * LW_DT_NC)), OW = j->g->OW, Wq = j->d->Wq;
    for (long cp = p0; cp < p1; cp++)
        for (long tb = t0; tb < t1; tb += LW_DT_TILES)
            for (long c0 = 0; c0 < j->C; c0 += cb) {
                const long c1 = LW_MIN(j->C, c0 + cb);
                for (long t = tb; t < LW_MIN(t1, tb + LW_DT_TILES); t++) {
                    const long oh = t / tpr, ow = t % tpr * R, q0 = oh * Wq + ow, o0 = oh * OW + ow;
                    float *pt = part + (t - tb) * LW_DT_R * LW_DT_NC;
                    switch (LW_MIN(R, OW - ow)) {
#define LW_DT_CASE(R) case R: lw_dt_tile(R, j, q0, o0, cp, c0, c1, pt); break;
                    LW_DT_CASE(1) LW_DT_CASE(2) LW_DT_CASE(3) LW_DT_CASE(4) LW_DT_CASE(5) LW_DT_CASE(6)
                    LW_DT_CASE(7) LW_DT_CASE(8) LW_DT_CASE(9) LW_DT_CASE(10) LW_DT_CASE(11) LW_DT_CASE(12)
                    LW_DT_CASE(13)
#undef LW_DT_CASE
                    default: lw_dt_tile(LW_DT_R, j, q0, o0, cp, c0, c1, pt); break;
                    }
                }
            }
}

/* Convolution over phase grids, transposed: w is the transposed packed weights per group
 * ([G][ceil(Mg/NC)][K][NC]); ws holds the grids of one image ([C][cs], then slack zeroed floats). */
static void lw_conv2d_dt(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                         const float *res, long res_ns, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long G = g->G, Cg = g->C / G, Mg = g->M / G, taps = g->KH * g->KW, K = Cg * taps, P = g->OH * g->OW;
    const long HW = g->H * g->W, panels = LW_CDIV(Mg, LW_DT_NC), w_size = panels * LW_DT_NC * K;
    const lw_dc_geom d = lw_dc_geom_of(g);
    float *grid = (float *)ws;
    long toff[LW_INDEX_TAPS];
    const unsigned long used = lw_dc_taps(g, &d, toff);
    /* tiles of R <= LW_DT_R positions within an output row (no position computed past OW) */
    const long tpr = LW_CDIV(g->OW, LW_DT_R), R = LW_CDIV(g->OW, tpr), tiles = g->OH * tpr;
    /* Tasks: (group, tile block, panel block): threads split the panels when the weights are the larger
     * operand, the tiles otherwise. */
    long tb = tiles, pb = panels;
    if (nt > 1 && Mg * K > Cg * d.cs) {
        pb = LW_CDIV(panels, LW_MIN(panels, 2L * nt));
        while (G * LW_CDIV(tiles, tb) * LW_CDIV(panels, pb) < 2L * nt && tb > 1) tb = LW_CDIV(tb, 2);
    } else if (nt > 1) {
        tb = LW_CDIV(tiles, 2L * nt);
        while (G * LW_CDIV(tiles, tb) * LW_CDIV(panels, pb) < 2L * nt && pb > 1) pb = LW_CDIV(pb, 2);
    }
    const long tblocks = LW_CDIV(tiles, tb), pblocks = LW_CDIV(panels, pb), tasks = G * tblocks * pblocks;
    const int even = nt > 1 && tasks % nt == 0;
    for (long i = 0; i < d.slack; i++) grid[g->C * d.cs + i] = 0.0f;
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * HW;
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks > 1)
        {
            {
                /* Each thread writes the grid rows of the output rows its tasks compute (a contiguous share
                 * when the tasks split the tiles evenly): the previous kernel wrote those input rows on this
                 * core, and the tiles read them from here (a split by channels moved half the grid between
                 * the cores twice). */
                const long th = omp_get_thread_num(), nth = omp_get_num_threads();
                long i0 = th * d.Hq / nth, i1 = (th + 1) * d.Hq / nth;
                if (even && G == 1 && pblocks == 1) {
                    i0 = th == 0 ? 0 : th * tasks / nth * tiles / tblocks / tpr;
                    i1 = th == nth - 1 ? d.Hq : (th + 1) * tasks / nth * tiles / tblocks / tpr;
                }
                for (long c = 0; c < g->C; c++) lw_dc_transform(g, &d, xn + c * HW, grid + c * d.cs, used, i0, i1);
            }
#pragma omp barrier
#define LW_DT_TASK(t)                                                                                       \
    do {                                                                                                    \
        const long gi = (t) / (tblocks * pblocks), r = (t) % (tblocks * pblocks);                          \
        const long tbi = r / pblocks, pbi = r % pblocks;                                                    \
        const lw_dt_job j = {                                                                               \
            e, g, &d, w + gi * w_size, grid + gi * Cg * d.cs, toff, taps, Cg, Mg, K, P,                     \
            y + (n * g->M + gi * Mg) * P, bias ? bias + gi * Mg * e->bias_rs : NULL,                        \
            res ? res + n * res_ns + gi * Mg * e->res_rs : NULL,                                            \
        };                                                                                                  \
        lw_dt_block(&j, tpr, R, tbi * tiles / tblocks, (tbi + 1) * tiles / tblocks, pbi * panels / pblocks, \
                    (pbi + 1) * panels / pblocks);                                                          \
    } while (0)
            LW_OMP_FOR_TASKS(even, tasks, LW_DT_TASK);
#undef LW_DT_TASK
        }
    }
}
#endif

/* --- Winograd F(2x2, 3x3) -------------------------------------------------------------------------- */

/* 3x3 stride-1 convs as 16 GEMMs over transformed tiles (Lavin and Gray, 2016): each 2x2 output tile needs
 * 16 products per (output, input) channel pair instead of 36, 2.25x fewer. The input is rewritten into the
 * phase grids of a virtual 4x4 stride-2 conv (lw_dc_transform), so element (r, k) of the 4x4 input tiles
 * at 16 consecutive grid positions is one contiguous vector (the grid's Wq - TW = 1 extra column per tile
 * row computes results that are discarded). Per block of up to LW_WG_NB positions and per thread: the input
 * transform V = B^T d B of every channel ([16][C][NB] in the thread's slot), 16 GEMMs M_xi = U_xi V_xi
 * (U = G g G^T, transformed and packed at compile time as [16][ceil(M/8)][C][8]; 8 rows x up to 3 vectors
 * per micro-tile, as lw_dc_tile but every vector load aligned), then the output transform Y = A^T M A with
 * the epilogue, stored as the tiles' 2x2 outputs. F(2x2, 3x3)'s transforms add and subtract only (the
 * weights' halves are exact), so results stay within a few ulps of a direct conv's. AVX-512 only. */
#ifdef LW_CONV_AVX512
#define LW_WG_MR 8
#define LW_WG_NV 3
#define LW_WG_NB (LW_WG_NV * 16) /* most grid positions per block */
#define LW_WG_SLOTS 8            /* most threads per Winograd conv (each needs a slot of workspace) */
/* Floats between two xi's planes of the transformed input (VS) and of the GEMM results (MS): padded by a
 * cache line, since a multiple of 4 KiB (64 channels x 48 floats) put the 16 stores or loads of one
 * position vector in one L1 set (the input transform of 3x3 64@56 took 0.13 ms instead of 0.09). */
#define LW_WG_VS(C) ((C) * LW_WG_NB + 16)
#define LW_WG_MS(Mp) ((Mp) * LW_WG_MR * LW_WG_NB + 16)

typedef struct {
    const lw_epilogue *e;
    const lw_conv_geom *g;  /* the conv */
    const lw_conv_geom *g4; /* the virtual 4x4 stride-2 conv over 2x2 tiles */
    const lw_dc_geom *d;    /* its phase grids */
    const float *u;         /* transformed packed weights [16][ceil(M/8)][C][8] */
    const float *grid;      /* the image's phase grids [C][cs] */
    const long *toff;       /* per tile element (r, k): its offset in a channel's grids */
    float *y;               /* the image's output [M][OH][OW] */
    const float *bias, *res;
} lw_wg_job;

/* V[xi][c][v * 16 + l] of grid positions [q0, q0 + nv * 16), every channel */
static void lw_wg_input(const lw_wg_job *j, long q0, int nv, float *restrict vb) {
    const long C = j->g->C, cs = j->d->cs, vs = LW_WG_VS(C);
    long o[16]; /* locals: the stores to vb would otherwise reload them */
    for (int k = 0; k < 16; k++) o[k] = j->toff[k];
    const float *restrict grid = j->grid + q0;
    for (long c = 0; c < C; c++) {
        const float *x = grid + c * cs;
        for (int v = 0; v < nv; v++) {
            __m512 t[4][4];
            for (int k = 0; k < 4; k++) { /* rows: B^T d */
                const __m512 d0 = _mm512_loadu_ps(x + o[k] + v * 16);
                const __m512 d1 = _mm512_loadu_ps(x + o[4 + k] + v * 16);
                const __m512 d2 = _mm512_loadu_ps(x + o[8 + k] + v * 16);
                const __m512 d3 = _mm512_loadu_ps(x + o[12 + k] + v * 16);
                t[0][k] = _mm512_sub_ps(d0, d2);
                t[1][k] = _mm512_add_ps(d1, d2);
                t[2][k] = _mm512_sub_ps(d2, d1);
                t[3][k] = _mm512_sub_ps(d1, d3);
            }
            for (int i = 0; i < 4; i++) { /* columns: (B^T d) B */
                float *o = vb + i * 4 * vs + c * LW_WG_NB + v * 16;
                _mm512_store_ps(o, _mm512_sub_ps(t[i][0], t[i][2]));
                _mm512_store_ps(o + vs, _mm512_add_ps(t[i][1], t[i][2]));
                _mm512_store_ps(o + 2 * vs, _mm512_sub_ps(t[i][2], t[i][1]));
                _mm512_store_ps(o + 3 * vs, _mm512_sub_ps(t[i][1], t[i][3]));
            }
        }
    }
}

/* mb[m][v * 16 + l] = sum over c of u[m][c] * vb[c][v * 16 + l] for the 8 rows of panel u ([C][8]). */
static inline __attribute__((always_inline)) void lw_wg_tile(const int NV, long C, const float *restrict u,
                                                             const float *restrict vb, float *restrict mb) {
    __m512 acc[LW_WG_MR][LW_WG_NV];
    _Pragma("GCC unroll 8") for (int i = 0; i < LW_WG_MR; i++)
        _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (long c = 0; c < C; c++, u += LW_WG_MR, vb += LW_WG_NB) {
        __m512 b[LW_WG_NV];
        _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(vb + v * 16);
        _Pragma("GCC unroll 8") for (int i = 0; i < LW_WG_MR; i++) {
            const __m512 a = _mm512_set1_ps(u[i]);
            _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
        }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < LW_WG_MR; i++)
        _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) _mm512_store_ps(mb + i * LW_WG_NB + v * 16, acc[i][v]);
}

/* The outputs of row `row` (2 * th or 2 * th + 1) of output channel m at lanes [lo, hi) of e (column 2 tw)
 * and o (column 2 tw + 1), tile column tw0 at lane lo: interleaved (float f of the pair is lane f / 2 of e
 * or o), picked from registers 16 at a time from float 2 lo on, then the epilogue's residual and
 * activation (alpha and bias are already applied), then the store of the columns inside the output. */
static inline void lw_wg_store(const lw_wg_job *j, long m, long row, __m512 e, __m512 o, int lo, int hi,
                               long tw0) {
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 z0 = _mm512_permutex2var_ps(e, ilo, o), z1 = _mm512_permutex2var_ps(e, ihi, o);
    const lw_epilogue *ep = j->e;
    const long OW = j->g->OW, col = 2 * tw0, n = LW_MIN(2L * (hi - lo), OW - col), P = j->g->OH * OW;
    float *yp = j->y + m * P + row * OW + col;
    const float *rp = j->res ? j->res + m * ep->res_rs + (row * OW + col) * ep->res_cs : NULL;
    for (long s = 0; s < n; s += 16) {
        const __mmask16 mk = lw_mask_range(0, n - s);
        /* floats [2 lo + s, + 16) of the pair (indices past 31 wrap, but only past n) */
        lw_vf t = (lw_vf)(2 * lo + s == 0 ? z0 : 2 * lo + s == 16 ? z1
                          : _mm512_permutex2var_ps(z0, _mm512_add_epi32(iota, _mm512_set1_epi32(2 * lo + (int)s)), z1));
        if (rp) t += ep->res_cs == 0 ? lw_splat(rp[0]) : (lw_vf)_mm512_maskz_loadu_ps(mk, rp + s);
        t = lw_vactivate(t, ep->act, ep->p0, ep->p1);
        _mm512_mask_storeu_ps(yp + s, mk, (__m512)t);
    }
}

/* Y = A^T M A for output channels [m0, m0 + mr) at grid positions [q0, q0 + nv * 16), with the epilogue. */
static void lw_wg_output(const lw_wg_job *j, const float *mb, long q0, int nv, long m0, long mr) {
    const lw_epilogue *ep = j->e;
    const long Wq = j->d->Wq, TW = j->g4->OW, TH = j->g4->OH, OH = j->g->OH, Mp = LW_CDIV(j->g->M, LW_WG_MR);
    for (int v = 0; v < nv; v++) {
        const long qa = q0 + v * 16;
        for (long i = 0; i < mr; i++) {
            const long m = m0 + i;
            const float *p = mb + i * LW_WG_NB + v * 16;
            __m512 s0[4], s1[4];
            for (int k = 0; k < 4; k++) { /* rows: A^T M */
                const long step = LW_WG_MS(Mp); /* one xi's results */
                const __m512 a0 = _mm512_load_ps(p + k * step), a1 = _mm512_load_ps(p + (4 + k) * step);
                const __m512 a2 = _mm512_load_ps(p + (8 + k) * step), a3 = _mm512_load_ps(p + (12 + k) * step);
                s0[k] = _mm512_add_ps(_mm512_add_ps(a0, a1), a2);
                s1[k] = _mm512_sub_ps(_mm512_sub_ps(a1, a2), a3);
            }
            const __m512 al = _mm512_set1_ps(ep->alpha);
            const __m512 bi = _mm512_set1_ps(j->bias ? ep->bias_scale * j->bias[m * ep->bias_rs] : 0.0f);
            __m512 y00 = _mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), s0[2]);
            __m512 y01 = _mm512_sub_ps(_mm512_sub_ps(s0[1], s0[2]), s0[3]);
            __m512 y10 = _mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), s1[2]);
            __m512 y11 = _mm512_sub_ps(_mm512_sub_ps(s1[1], s1[2]), s1[3]);
            y00 = _mm512_fmadd_ps(y00, al, bi);
            y01 = _mm512_fmadd_ps(y01, al, bi);
            y10 = _mm512_fmadd_ps(y10, al, bi);
            y11 = _mm512_fmadd_ps(y11, al, bi);
            /* runs of lanes on one tile row, inside the tile grid */
            for (long th = qa / Wq; th < TH && th * Wq < qa + 16; th++) {
                const long lo = LW_MAX(0, th * Wq - qa), hi = LW_MIN(16L, th * Wq + TW - qa);
                if (hi <= lo) continue;
                const long tw0 = qa + lo - th * Wq;
                lw_wg_store(j, m, 2 * th, y00, y01, (int)lo, (int)hi, tw0);
                if (2 * th + 1 < OH) lw_wg_store(j, m, 2 * th + 1, y10, y11, (int)lo, (int)hi, tw0);
            }
        }
    }
}

/* One block: grid positions [q0, q0 + nv * 16); vb and mb: the thread's slot. */
static void lw_wg_block(const lw_wg_job *j, long q0, int nv, float *vb, float *mb) {
    const long C = j->g->C, Mp = LW_CDIV(j->g->M, LW_WG_MR);
    lw_wg_input(j, q0, nv, vb);
    for (int xi = 0; xi < 16; xi++) {
        const float *v = vb + xi * LW_WG_VS(C);
        for (long mp = 0; mp < Mp; mp++) {
            const float *u = j->u + ((long)xi * Mp + mp) * C * LW_WG_MR;
            float *o = mb + xi * LW_WG_MS(Mp) + mp * LW_WG_MR * LW_WG_NB;
            if (nv == 3) lw_wg_tile(3, C, u, v, o);
            else if (nv == 2) lw_wg_tile(2, C, u, v, o);
            else lw_wg_tile(1, C, u, v, o);
        }
    }
    for (long mp = 0; mp < Mp; mp++)
        lw_wg_output(j, mb + mp * LW_WG_MR * LW_WG_NB, q0, nv, mp * LW_WG_MR,
                     LW_MIN((long)LW_WG_MR, j->g->M - mp * LW_WG_MR));
}

/* Floats of one thread's slot: V [16][C][NB] and M [16][ceil(M/8) * 8][NB], each xi padded (LW_WG_VS/MS). */
static inline long lw_wg_slot(const lw_conv_geom *g) {
    return 16 * (LW_WG_VS(g->C) + LW_WG_MS(LW_CDIV(g->M, LW_WG_MR)));
}

/* Winograd F(2x2, 3x3) conv (3x3, stride 1, dilation 1, one group): u is the transformed packed weights;
 * ws holds the phase grids of one image ([C][cs], then slack zeroed floats), then LW_WG_SLOTS slots. */
static void lw_conv2d_wino(int nt, const lw_conv_geom *g, const float *x, const float *u, const float *bias,
                           const float *res, long res_ns, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long TH = LW_CDIV(g->OH, 2), TW = LW_CDIV(g->OW, 2), HW = g->H * g->W;
    const lw_conv_geom g4 = {g->N, g->C, g->H, g->W, g->M, 1, 4, 4, 2, 2, 1, 1, g->PH, g->PW, TH, TW};
    const lw_dc_geom d = lw_dc_geom_of(&g4);
    float *grid = (float *)ws;
    float *slots = grid + LW_ALIGN64((size_t)(g->C * d.cs + d.slack) * 4) / 4;
    long toff[16];
    const unsigned long used = lw_dc_taps(&g4, &d, toff);
    /* blocks of near-equal vector counts (at most LW_WG_NV each), as many as the threads divide */
    const long nvec = LW_CDIV(d.Q, 16);
    long blocks = LW_CDIV(nvec, LW_WG_NV);
    if (nt > 1 && blocks % nt) blocks = LW_MIN(nvec, LW_CDIV(blocks, nt) * nt);
    nt = (int)LW_MIN((long)nt, LW_MIN(blocks, (long)LW_WG_SLOTS)); /* a slot per thread */
    for (long i = 0; i < d.slack; i++) grid[g->C * d.cs + i] = 0.0f;
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * HW;
        const lw_wg_job j = {e, g, &g4, &d, u, grid, toff, y + n * g->M * g->OH * g->OW, bias,
                             res ? res + n * res_ns : NULL};
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            const long th = omp_get_thread_num(), nth = omp_get_num_threads();
            /* each thread writes the grid rows of the blocks it computes (static: block b on thread
             * b * nth / blocks), as lw_conv2d_dt */
            const long b0 = th * blocks / nth, b1 = (th + 1) * blocks / nth;
            const long i0 = th == 0 ? 0 : b0 * nvec / blocks * 16 / d.Wq;
            const long i1 = th == nth - 1 ? d.Hq : b1 * nvec / blocks * 16 / d.Wq;
            for (long c = 0; c < g->C; c++) lw_dc_transform(&g4, &d, xn + c * HW, grid + c * d.cs, used, i0, i1);
#pragma omp barrier
            float *vb = slots + th * lw_wg_slot(g), *mb = vb + 16 * LW_WG_VS(g->C);
            for (long b = b0; b < b1; b++) {
                const long v0 = b * nvec / blocks, v1 = (b + 1) * nvec / blocks;
                lw_wg_block(&j, v0 * 16, (int)(v1 - v0), vb, mb);
            }
        }
    }
}
#endif
