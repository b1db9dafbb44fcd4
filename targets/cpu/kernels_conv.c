/* kernels_conv.c: fp32 convolutions (cpu target): im2col + the packed GEMM of kernels_gemm.c, and a direct
 * depthwise kernel. The convolution geometry (lw_conv_geom) is shared with the int8 kernels (kernels_quant.c).
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

/* Copy one input plane into a zero-padded [Hp][Wp] buffer (rows ih = r - PH, columns iw = c - PW) followed by
 * 2 * LW_VEC zeros, so every window read, including a last vector's spill past a row, is inside it. */
static void lw_pad_plane(const lw_conv_geom *g, const float *xp, float *pad, long Hp, long Wp) {
    const long left = LW_MIN(g->PW, Wp), count = LW_MAX(0, LW_MIN(g->W, Wp - g->PW));
    for (long r = 0; r < Hp; r++) {
        float *d = pad + r * Wp;
        long ih = r - g->PH;
        if (ih < 0 || ih >= g->H) {
            for (long c = 0; c < Wp; c++) d[c] = 0.0f;
            continue;
        }
        for (long c = 0; c < left; c++) d[c] = 0.0f;
        memcpy(d + left, xp + ih * g->W, (size_t)count * sizeof(float));
        for (long c = left + count; c < Wp; c++) d[c] = 0.0f;
    }
    for (long c = 0; c < 2 * LW_VEC; c++) pad[Hp * Wp + c] = 0.0f;
}

/* Depthwise convolution (G == C, M a multiple of C), direct, one image at a time: each output plane's input
 * is first copied into a zero-padded plane in the workspace (slot floats per channel), then every output
 * row is computed LW_VEC columns at a time (strides 1 and 2) with the taps accumulated in a register, no
 * bounds checks. w is [M][KH][KW] as in ONNX. */
static void lw_depthwise2d(int nt, const lw_conv_geom *g, const float *x, const float *w, const float *bias,
                           const float *res, long res_ns, float *y, float *ws, long slot,
                           const lw_epilogue *e) {
    const long mult = g->M / g->C, P = g->OH * g->OW, taps = g->KH * g->KW;
    const long Hp = (g->OH - 1) * g->SH + (g->KH - 1) * g->DH + 1;
    const long Wp = LW_MAX(g->PW + g->W, (g->OW - 1) * g->SW + (g->KW - 1) * g->DW + 1);
    const long SW = g->SW;
    for (long n = 0; n < g->N; n++)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && g->M > 1)
    for (long m = 0; m < g->M; m++) {
        const long t = n * g->M + m;
        float *pad = ws + m * slot;
        lw_pad_plane(g, x + (n * g->C + m / mult) * g->H * g->W, pad, Hp, Wp);
        const float *wp = w + m * taps;
        const float *rn = res ? res + n * res_ns : NULL;
        float *yp = y + t * P;
        for (long oh = 0; oh < g->OH; oh++) {
            float *row = yp + oh * g->OW;
            const float *base = pad + oh * g->SH * Wp;
            if (SW <= 2) {
                for (long o = 0; o < g->OW; o += LW_VEC) {
                    lw_vf acc = (lw_vf){0};
                    for (long kh = 0; kh < g->KH; kh++) {
                        const float *xr = base + kh * g->DH * Wp + o * SW;
                        for (long kw = 0; kw < g->KW; kw++) {
                            lw_vf v = SW == 1 ? lw_load(xr + kw * g->DW) : lw_load_even(xr + kw * g->DW);
                            acc += lw_splat(wp[kh * g->KW + kw]) * v;
                        }
                    }
                    if (o + LW_VEC <= g->OW) {
                        lw_store(row + o, acc);
                    } else {
                        float tail[LW_VEC];
                        lw_store(tail, acc);
                        memcpy(row + o, tail, (size_t)(g->OW - o) * sizeof(float));
                    }
                }
            } else {
                for (long ow = 0; ow < g->OW; ow++) {
                    float acc = 0.0f;
                    for (long kh = 0; kh < g->KH; kh++)
                        for (long kw = 0; kw < g->KW; kw++)
                            acc += wp[kh * g->KW + kw] * base[kh * g->DH * Wp + ow * SW + kw * g->DW];
                    row[ow] = acc;
                }
            }
            lw_epilogue_row(e, row, g->OW, m, oh * g->OW, bias, rn);
        }
    }
}
