/* kernels_conv_runtime.c: convolutions whose weights are run-time tensors (cpu target; emitter:
 * targets/cpu/emit_conv_runtime.py and the ConvInteger path of emit_quant.py).
 *
 * The constant-weight convolutions of kernels_conv.c read weights packed at compile time. Here the weights
 * (a graph input, or computed: QLinearConv's dequantized weights, the ONNX function expansion of
 * CausalConvWithState) are only known when the model runs, so:
 * - float Conv / lowering::FusedConv: per image, im2col of every group straight into the packed B panels
 *   of kernels_gemm.c ([G][ceil(P/LW_NR)][Kg][LW_NR]), then one lw_gemm batch over the groups whose A is
 *   the weight tensor itself, read in place (row stride Kg, no packing pass: kernels_gemm.c reads a runtime
 *   A through its strides at the packed speed). Bias, residual and activation go through the GEMM's
 *   epilogue, so the output is stored once.
 * - ConvInteger with run-time or per-channel weight zero points: a direct int32 loop nest over (x - zx)
 *   (w - zw[co]), exact (int64 sums wrapped to int32 like the reference).
 * Both take 1-, 2- and 3-D geometry (leading spatial axes of size 1) and any groups, strides, dilations
 * and pads. The reduction order never depends on the thread count.
 */

/* Convolution geometry over up to 3 spatial axes (1-D and 2-D ones lifted with leading axes of size 1,
 * stride 1, dilation 1, pad 0). */
typedef struct {
    long N, C, M, G;
    long I[3], K[3], S[3], D[3], P[3], O[3]; /* input, kernel, stride, dilation, pad begin, output */
} lw_rconv_geom;

static inline long lw_rconv_positions(const lw_rconv_geom *g) { return g->O[0] * g->O[1] * g->O[2]; }

/* One packed B panel [Kg][LW_NR] of a group's im2col: output positions [j0, j0 + LW_NR) (zero past P),
 * rows (channel, k0, k1, k2) of the group's cg channels starting at x. The panel's positions are cut into
 * runs along the last output axis (at most LW_NR / O2 + 2 of them); for each row a run is either wholly
 * outside the input (zeros) or a strided copy of one input row with zeros at its ends. */
static void lw_rconv_panel(const lw_rconv_geom *g, const float *x, long cg, long j0, float *d) {
    const long P = lw_rconv_positions(g), plane = g->I[0] * g->I[1] * g->I[2], S2 = g->S[2];
    const int nr = (int)LW_MIN((long)LW_NR, P - j0);
    int run_j[LW_NR], run_n[LW_NR], runs = 0;
    long run_o0[LW_NR], run_o1[LW_NR], run_o2[LW_NR];
    for (int j = 0; j < nr;) {
        const long q = j0 + j, o2 = q % g->O[2], o1 = (q / g->O[2]) % g->O[1], o0 = q / (g->O[2] * g->O[1]);
        const int n = (int)LW_MIN((long)(nr - j), g->O[2] - o2);
        run_j[runs] = j, run_n[runs] = n, run_o0[runs] = o0, run_o1[runs] = o1, run_o2[runs] = o2;
        runs++;
        j += n;
    }
    float *row = d;
    for (long c = 0; c < cg; c++) {
        const float *xc = x + c * plane;
        for (long k0 = 0; k0 < g->K[0]; k0++)
            for (long k1 = 0; k1 < g->K[1]; k1++)
                for (long k2 = 0; k2 < g->K[2]; k2++) {
                    const long e0 = k0 * g->D[0] - g->P[0], e1 = k1 * g->D[1] - g->P[1];
                    const long e2 = k2 * g->D[2] - g->P[2];
                    for (int r = 0; r < runs; r++) {
                        float *dr = row + run_j[r];
                        const long n = run_n[r], i0 = run_o0[r] * g->S[0] + e0, i1 = run_o1[r] * g->S[1] + e1;
                        if ((unsigned long)i0 >= (unsigned long)g->I[0] ||
                            (unsigned long)i1 >= (unsigned long)g->I[1]) {
                            for (long t = 0; t < n; t++) dr[t] = 0.0f;
                            continue;
                        }
                        /* i2 = (o2 + t) * S2 + e2 inside [0, I2) for t in [lo, hi) */
                        const long b2 = run_o2[r] * S2 + e2;
                        long lo = b2 >= 0 ? 0 : LW_CDIV(-b2, S2);
                        long hi = b2 >= g->I[2] ? 0 : (g->I[2] - 1 - b2) / S2 + 1;
                        lo = LW_MIN(lo, n);
                        hi = LW_MAX(lo, LW_MIN(hi, n));
                        const float *src = xc + (i0 * g->I[1] + i1) * g->I[2] + b2;
                        for (long t = 0; t < lo; t++) dr[t] = 0.0f;
                        if (S2 == 1) memcpy(dr + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
                        else for (long t = lo; t < hi; t++) dr[t] = src[t * S2];
                        for (long t = hi; t < n; t++) dr[t] = 0.0f;
                    }
                    for (int j = nr; j < LW_NR; j++) row[j] = 0.0f;
                    row += LW_NR;
                }
    }
}

/* Convolutions with one input channel per group (depthwise, with any channel multiplier), direct: per
 * output row, every tap adds w * (a strided input row run) to the row, then the epilogue. No im2col, no
 * GEMM (whose M would be the channel multiplier: 1). */
static void lw_conv_rt_dw(int nt, const lw_rconv_geom *g, const float *x, const float *w, const float *bias,
                          const float *res, long res_n, float *y, const lw_epilogue *e) {
    const long mg = g->M / g->G, taps = g->K[0] * g->K[1] * g->K[2], plane = g->I[0] * g->I[1] * g->I[2];
    const long P = lw_rconv_positions(g), O2 = g->O[2], S2 = g->S[2], rows = g->O[0] * g->O[1];
    const int parallel = nt > 1 && g->N * g->M > 1 && g->N * g->M * P * taps > 32768;
#pragma omp parallel for num_threads(nt) schedule(static) if (parallel)
    for (long t = 0; t < g->N * g->M; t++) {
        const long n = t / g->M, co = t % g->M;
        const float *xc = x + (n * g->C + co / mg) * plane, *wc = w + co * taps;
        float *yc = y + t * P;
        for (long orow = 0; orow < rows; orow++) {
            const long o0 = orow / g->O[1], o1 = orow % g->O[1];
            float *yr = yc + orow * O2;
            for (long q = 0; q < O2; q++) yr[q] = 0.0f;
            for (long k0 = 0; k0 < g->K[0]; k0++) {
                const long i0 = o0 * g->S[0] - g->P[0] + k0 * g->D[0];
                if ((unsigned long)i0 >= (unsigned long)g->I[0]) continue;
                for (long k1 = 0; k1 < g->K[1]; k1++) {
                    const long i1 = o1 * g->S[1] - g->P[1] + k1 * g->D[1];
                    if ((unsigned long)i1 >= (unsigned long)g->I[1]) continue;
                    const float *xr = xc + (i0 * g->I[1] + i1) * g->I[2];
                    for (long k2 = 0; k2 < g->K[2]; k2++) {
                        const float wv = wc[(k0 * g->K[1] + k1) * g->K[2] + k2];
                        const long b2 = k2 * g->D[2] - g->P[2];
                        long lo = b2 >= 0 ? 0 : LW_CDIV(-b2, S2);
                        long hi = b2 >= g->I[2] ? 0 : (g->I[2] - 1 - b2) / S2 + 1;
                        lo = LW_MIN(lo, O2);
                        hi = LW_MAX(lo, LW_MIN(hi, O2));
                        const float *src = xr + b2;
                        if (S2 == 1)
                            for (long q = lo; q < hi; q++) yr[q] += wv * src[q];
                        else
                            for (long q = lo; q < hi; q++) yr[q] += wv * src[q * S2];
                    }
                }
            }
        }
        lw_epilogue_row(e, yc, P, co, 0, bias, res ? res + n * res_n : NULL);
    }
}

/* Workspace bytes of lw_conv_rt: the G GEMM items, then one image's packed im2col panels of every group. */
static inline size_t lw_conv_rt_workspace(const lw_rconv_geom *g) {
    const long cg = g->C / g->G, kg = cg * g->K[0] * g->K[1] * g->K[2];
    const long np = LW_CDIV(lw_rconv_positions(g), LW_NR);
    return LW_ALIGN64((size_t)g->G * sizeof(lw_gemm_item)) + (size_t)(g->G * np * kg * LW_NR) * sizeof(float);
}

/* y = epilogue(conv(x, w)) with w [M][C/G][K...] read at run time; bias [M] or NULL; res or NULL, image i
 * channel c at res + i * res_n + c * e->res_rs (e->res_cs 1: per position, 0: broadcast). */
static void lw_conv_rt(int nt, const lw_rconv_geom *g, const float *x, const float *w, const float *bias,
                       const float *res, long res_n, float *y, unsigned char *ws, const lw_epilogue *e) {
    const long G = g->G, cg = g->C / G, mg = g->M / G, kg = cg * g->K[0] * g->K[1] * g->K[2];
    const long P = lw_rconv_positions(g), np = LW_CDIV(P, LW_NR), plane = g->I[0] * g->I[1] * g->I[2];
    if (cg == 1 && G > 1) {
        lw_conv_rt_dw(nt, g, x, w, bias, res, res_n, y, e);
        return;
    }
    lw_gemm_item *items = (lw_gemm_item *)ws;
    float *cols = (float *)(ws + LW_ALIGN64((size_t)G * sizeof(lw_gemm_item)));
    const lw_gemm_shape s = {mg, P, kg, P, *e, kg, 1};
    for (long n = 0; n < g->N; n++) {
        const float *xn = x + n * g->C * plane;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && G * np > 1 && G * P * kg > 32768)
        for (long t = 0; t < G * np; t++) {
            const long gi = t / np, p = t % np;
            lw_rconv_panel(g, xn + gi * cg * plane, cg, p * LW_NR, cols + (gi * np + p) * kg * LW_NR);
        }
        for (long gi = 0; gi < G; gi++) {
            items[gi].a = w + gi * mg * kg;
            items[gi].b = cols + gi * np * kg * LW_NR;
            items[gi].c = y + (n * g->M + gi * mg) * P;
            items[gi].bias = bias ? bias + gi * mg : NULL;
            items[gi].res = res ? res + n * res_n + gi * mg * e->res_rs : NULL;
        }
        lw_gemm(nt, &s, items, G);
    }
}

/* ConvInteger, direct: y[n][co][p] = sum (x - zx) * wd[co][k] over the window (padding contributes 0),
 * wd = w - w_zero_point already widened to int32 by the caller; int64 sums wrapped to int32. */
#define LW_CONV_INTEGER_RT(NAME, T)                                                                       \
    static void NAME(int nt, const lw_rconv_geom *g, const T *x, int32_t zx, const int32_t *wd,          \
                     int32_t *y) {                                                                        \
        const long G = g->G, cg = g->C / G, mg = g->M / G;                                                \
        const long taps = g->K[0] * g->K[1] * g->K[2], kg = cg * taps;                                    \
        const long P = lw_rconv_positions(g), plane = g->I[0] * g->I[1] * g->I[2];                        \
        const int parallel = nt > 1 && g->N * g->M * P * kg > 65536;                                      \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (parallel)")                        \
        for (long t = 0; t < g->N * g->M; t++) {                                                          \
            const long n = t / g->M, co = t % g->M, gi = co / mg;                                         \
            const int32_t *wr = wd + co * kg;                                                             \
            const T *xg = x + (n * g->C + gi * cg) * plane;                                               \
            int32_t *yr = y + t * P;                                                                      \
            for (long q = 0; q < P; q++) {                                                                \
                const long o2 = q % g->O[2], o1 = (q / g->O[2]) % g->O[1], o0 = q / (g->O[2] * g->O[1]);  \
                int64_t acc = 0;                                                                          \
                for (long c = 0; c < cg; c++) {                                                           \
                    const T *xc = xg + c * plane;                                                         \
                    const int32_t *wc = wr + c * taps;                                                    \
                    for (long k0 = 0; k0 < g->K[0]; k0++) {                                               \
                        const long i0 = o0 * g->S[0] - g->P[0] + k0 * g->D[0];                            \
                        if ((unsigned long)i0 >= (unsigned long)g->I[0]) continue;                        \
                        for (long k1 = 0; k1 < g->K[1]; k1++) {                                           \
                            const long i1 = o1 * g->S[1] - g->P[1] + k1 * g->D[1];                        \
                            if ((unsigned long)i1 >= (unsigned long)g->I[1]) continue;                    \
                            const T *xr = xc + (i0 * g->I[1] + i1) * g->I[2];                             \
                            const int32_t *wk = wc + (k0 * g->K[1] + k1) * g->K[2];                       \
                            for (long k2 = 0; k2 < g->K[2]; k2++) {                                       \
                                const long i2 = o2 * g->S[2] - g->P[2] + k2 * g->D[2];                    \
                                if ((unsigned long)i2 >= (unsigned long)g->I[2]) continue;                \
                                acc += (int64_t)((int32_t)xr[i2] - zx) * wk[k2];                          \
                            }                                                                             \
                        }                                                                                 \
                    }                                                                                     \
                }                                                                                         \
                yr[q] = (int32_t)(uint32_t)(uint64_t)acc;                                                 \
            }                                                                                             \
        }                                                                                                 \
    }

LW_CONV_INTEGER_RT(lw_conv_integer_rt_u8, uint8_t)
LW_CONV_INTEGER_RT(lw_conv_integer_rt_i8, int8_t)
