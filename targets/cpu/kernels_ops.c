/* kernels_ops.c: pooling, data movement and per-channel scale/shift (cpu target).
 *
 * Elementwise ops are not here: the generator emits one specialised loop per node for them.
 */

/* Sliding-window pooling over 2-D spatial axes (1-D pooling uses H = KH = 1). */
typedef struct {
    long planes, H, W, OH, OW;   /* planes = N * C */
    long KH, KW, SH, SW, DH, DW;
    long PH, PW, PHE, PWE;       /* pads at the start and end of each axis */
    int is_max, count_include_pad;
} lw_pool_geom;

/* The depth axis of 3-D pooling (lw_pool2d with a depth: D planes of H x W per channel, OD output planes);
 * 2-D pooling passes NULL. */
typedef struct {
    long D, OD, KD, SD, DD, PD, PDE;
} lw_pool_depth;

/* Valid output columns [lo, hi) of a window tap whose input column is ow * sw + off, inside [0, W). */
static inline void lw_tap_range(long off, long sw, long W, long OW, long *lo, long *hi) {
    *lo = off >= 0 ? 0 : LW_MIN(OW, LW_CDIV(-off, sw));
    *hi = off >= W ? *lo : LW_MAX(*lo, LW_MIN(OW, (W - 1 - off) / sw + 1));
}

/* How many taps of a window along one axis start at ``start`` fall inside [lo, hi). */
static inline long lw_taps_inside(long start, long k, long d, long lo, long hi) {
    long count = 0;
    for (long i = 0; i < k; i++) count += start + i * d >= lo && start + i * d < hi;
    return count;
}

/* Row buffers: the padded row (PW pads, the W combined columns, then the fill) and its SW phases of Lp
 * columns each (phase p holds padded columns SW * i + p), Lp = L rounded up to whole vectors, L = OW +
 * (KW - 1) * DW / SW the columns any output reads per phase. Both have room for whole-vector reads past
 * their ends (lanes that only feed discarded outputs). */
static inline long lw_pool_phase_len(const lw_pool_geom *g) {
    return LW_CDIV(g->OW + (g->KW - 1) * g->DW / g->SW, LW_VEC) * LW_VEC;
}
static inline long lw_pool_row_len(const lw_pool_geom *g) {
    return g->SW * lw_pool_phase_len(g) + g->PW + g->W + 2 * LW_VEC;
}

/* Pool one output row in two vectorised passes. Vertical: v = max (or sum) over the window's valid input
 * rows (of every valid input plane of the window, with a depth), column by column, into the padded row
 * buffer (the pads hold -inf, or 0: neither changes a max or a sum). Horizontal: the padded row is split
 * into its SW phases, so tap kw of output ow reads phase (kw * DW) % SW at ow + (kw * DW) / SW: every
 * tap is a contiguous load, and a block of LW_VEC outputs
 * combines its KW taps in registers (the last block through a buffer). Averages are divided by the
 * separable count of counted taps. The max is the compare-select x > m ? x : m, NaN inputs skipped, as
 * with every other order of the same taps. */
static void lw_pool_row(const lw_pool_geom *g, const lw_pool_depth *dz, const float *xp, float *row,
                        long od, long oh, float *vpad, float *phase) {
    const int is_max = g->is_max;
    const float init = is_max ? -INFINITY : 0.0f;
    const long W = g->W, SW = g->SW, Lp = lw_pool_phase_len(g), OW = g->OW, KW = g->KW;
    float *v = vpad + g->PW;
    int first = 1;
    const long KD = dz ? dz->KD : 1;
    for (long kd = 0; kd < KD; kd++) {
        const long id = dz ? od * dz->SD - dz->PD + kd * dz->DD : 0;
        if (dz && (id < 0 || id >= dz->D)) continue;
        const float *xd = xp + id * g->H * W;
        for (long kh = 0; kh < g->KH; kh++) {
            const long ih = oh * g->SH - g->PH + kh * g->DH;
            if (ih < 0 || ih >= g->H) continue;
            const float *xr = xd + ih * W;
            if (first) memcpy(v, xr, (size_t)W * sizeof(float));
            else if (is_max) for (long c = 0; c < W; c++) v[c] = LW_MAX(xr[c], v[c]);
            else for (long c = 0; c < W; c++) v[c] += xr[c];
            first = 0;
        }
    }
    if (first) for (long c = 0; c < W; c++) v[c] = init;
    const float *ph = vpad;
    if (SW == 2) {
        for (long i = 0; i < Lp; i += LW_VEC) {
            lw_store(phase + i, lw_load_even(vpad + 2 * i));
            lw_store(phase + Lp + i, lw_load_odd(vpad + 2 * i));
        }
        ph = phase;
    } else if (SW > 2) {
        for (long p = 0; p < SW; p++)
            for (long i = 0; i < Lp; i++) phase[p * Lp + i] = vpad[SW * i + p];
        ph = phase;
    }
    const long ld = SW == 1 ? 0 : Lp; /* SW == 1: the padded row is the one phase */
    long off[KW];
    for (long kw = 0; kw < KW; kw++) off[kw] = (kw * g->DW % SW) * ld + kw * g->DW / SW;
    for (long ow = 0; ow < OW; ow += LW_VEC) {
        lw_vf acc;
        if (is_max && KW == 3) { /* the common 3-wide max window, unrolled */
            const lw_vf a = lw_load(ph + off[0] + ow), b = lw_load(ph + off[1] + ow);
            const lw_vf c = lw_load(ph + off[2] + ow);
            acc = lw_vselect((lw_vi)(b > a), b, a);
            acc = lw_vselect((lw_vi)(c > acc), c, acc);
        } else {
            acc = lw_splat(init);
            for (long kw = 0; kw < KW; kw++) {
                const lw_vf x = lw_load(ph + off[kw] + ow);
                acc = is_max ? lw_vselect((lw_vi)(x > acc), x, acc) : acc + x;
            }
        }
        if (ow + LW_VEC <= OW) lw_store(row + ow, acc);
        else for (long u = 0; u < OW - ow; u++) row[ow + u] = acc[u];
    }
    if (is_max) return;
    const int pad = g->count_include_pad;
    long rows =
        lw_taps_inside(oh * g->SH - g->PH, g->KH, g->DH, pad ? -g->PH : 0, pad ? g->H + g->PHE : g->H);
    if (dz)
        rows *= lw_taps_inside(od * dz->SD - dz->PD, dz->KD, dz->DD, pad ? -dz->PD : 0,
                               pad ? dz->D + dz->PDE : dz->D);
    for (long ow = 0; ow < OW; ow++) {
        long cols = lw_taps_inside(ow * SW - g->PW, KW, g->DW, pad ? -g->PW : 0, pad ? W + g->PWE : W);
        row[ow] = row[ow] / (float)(rows * cols);
    }
}

#ifdef LW_CONV_AVX512
/* MaxPool 3x3 stride 2 (no dilation) on AVX-512, one output row in registers: per block of 16 outputs, the 33
 * input columns they read from each valid input row (masked loads, -inf outside the row), the rows' max,
 * then the even, odd and next-even columns by permutes (lw_s2_taps). ResNet-18's stem pool (64 x 112 x
 * 112) alone 0.206 -> 0.163 ms at 1 thread, 0.129 -> 0.088 at 2 (the row-buffer form: a vertical pass and a
 * phase split through memory); in the model 0.31 -> 0.26 and 0.18 -> 0.13 ms. The max is the compare-select
 * x > m ? x : m, taps in the same order as lw_pool_row's. */
#define LW_POOL_3S2(g, dz) \
    ((g)->is_max && !(dz) && (g)->KH == 3 && (g)->KW == 3 && (g)->SH == 2 && (g)->SW == 2 && (g)->DH == 1 \
     && (g)->DW == 1)
static void lw_pool_row_3s2(const lw_pool_geom *g, const float *xp, float *row, long oh) {
    const float *rows[3];
    int nr = 0;
    for (long kh = 0; kh < 3; kh++) {
        const long ih = oh * 2 - g->PH + kh;
        if (ih >= 0 && ih < g->H) rows[nr++] = xp + ih * g->W;
    }
    for (long ow = 0; ow < g->OW; ow += 16) {
        __m512 a, b, c;
        lw_s2_taps(rows, nr, 2 * ow - g->PW, g->W, _mm512_set1_ps(-INFINITY), 1, &a, &b, &c);
        const __m512 ab = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, a, _CMP_GT_OQ), a, b); /* b > a ? b : a */
        const __m512 t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, ab, _CMP_GT_OQ), ab, c);
        _mm512_mask_storeu_ps(row + ow, lw_mask_range(0, g->OW - ow), t);
    }
}
#endif

#define LW_POOL_SLOTS 64 /* row-buffer slots in the workspace: at most this many threads run one pooling */

/* Output rows split evenly over the threads, each with its slot of the workspace (the padded row and the
 * phases, lw_pool_row_len floats each; emit_data.py sizes it): with at least as many rows per plane as
 * threads, a band of rows of every plane per thread (the producing conv splits its output by rows too, so
 * each thread reads what its core wrote: ResNet-18's MaxPool after its stem 0.189 -> 0.171 ms at 2 threads),
 * else a share of the (plane, row) pairs. With a depth (3-D pooling, else NULL) every channel has D input
 * and OD output planes. */
static void lw_pool2d(int nt, const lw_pool_geom *g, const lw_pool_depth *dz, const float *x, float *y,
                      float *ws) {
    const long D = dz ? dz->D : 1, OD = dz ? dz->OD : 1;
    const long len = lw_pool_row_len(g), tasks = g->planes * OD * g->OH;
    const long slots = LW_MIN((long)LW_POOL_SLOTS, tasks);
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks * g->OW > 16384)
    {
        const long used = LW_MIN((long)omp_get_num_threads(), slots), tid = omp_get_thread_num();
        float *buf = ws + LW_MIN(tid, slots - 1) * 2 * len;
        const long t0 = tid < used ? tid * tasks / used : tasks;
        const long t1 = tid < used ? (tid + 1) * tasks / used : tasks;
        const float init = g->is_max ? -INFINITY : 0.0f;
        const int bands = g->OH >= used, mine = tid < used;
        const long r0 = bands && mine ? tid * g->OH / used : 0, r1 = bands && mine ? (tid + 1) * g->OH / used : 0;
        if (bands ? r0 < r1 : t0 < t1)
            for (long c = 0; c < len; c++) buf[c] = init; /* the pads; lw_pool_row rewrites the row itself */
        for (long u = bands ? 0 : t0; u < (bands ? g->planes * OD * (r1 - r0) : t1); u++) {
            const long t = bands ? u / (r1 - r0) * g->OH + r0 + u % (r1 - r0) : u;
            const long plane = t / (OD * g->OH), od = t / g->OH % OD, oh = t % g->OH;
#ifdef LW_CONV_AVX512
            if (LW_POOL_3S2(g, dz)) {
                lw_pool_row_3s2(g, x + plane * g->H * g->W, y + t * g->OW, oh);
                continue;
            }
#endif
            lw_pool_row(g, dz, x + plane * D * g->H * g->W, y + t * g->OW, od, oh, buf, buf + len);
        }
    }
}

/* Sliding-window pooling over up to 3 spatial axes, one output at a time: what the row kernel above does not
 * cover (3-D windows, LpPool, MaxPool's Indices output). 1-D and 2-D windows are lifted to 3-D with
 * leading axes of size 1. Max: the first tap v with v > m from -inf (NaN skipped), its flat index in x
 * (row-major spatial part, or column-major with storage_order) when idx is given; average: the sum over
 * the counted taps (inside the input, or the padded input with count_include_pad) in double; Lp: (sum of
 * |x|^p over the window)^(1/p), pads adding nothing. */
typedef struct {
    long planes, in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
    int mode, count_include_pad, storage_order;
    float p;
} lw_pool3_geom;

enum { LW_POOL3_MAX = 0, LW_POOL3_AVG = 1, LW_POOL3_LP = 2 };

/* The steps i in [lo, hi) of [0, count) whose position i * step + off lies in [0, n) (a window's taps inside
 * the input, or the input positions a scatter lands inside the output). */
static inline void lw_axis_span(long off, long step, long count, long n, long *lo, long *hi) {
    *lo = off >= 0 ? 0 : LW_CDIV(-off, step);
    *hi = off > n - 1 ? 0 : LW_MIN(count, (n - 1 - off) / step + 1);
    if (*hi < *lo) *hi = *lo;
}

static void lw_pool3(int nt, const lw_pool3_geom *g, const float *x, float *y, int64_t *idx) {
    const long D = g->in[0], H = g->in[1], W = g->in[2], OD = g->out[0], OH = g->out[1], OW = g->out[2];
    const long plane = D * H * W, rows = g->planes * OD * OH, taps = g->k[0] * g->k[1] * g->k[2];
    /* the index step of each axis in the Indices output */
    const int col = g->storage_order;
    const long step[3] = {col ? 1 : H * W, col ? D : W, col ? D * H : 1};
    const int mode = g->mode, pad = g->count_include_pad;
    const long d2 = g->d[2];
    const double p = g->p;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows * OW * taps > 65536)
    for (long r = 0; r < rows; r++) {
        const long t = r / (OD * OH), od = r / OH % OD, oh = r % OH;
        const float *xp = x + t * plane;
        const long s0 = od * g->s[0] - g->pb[0], s1 = oh * g->s[1] - g->pb[1];
        long lo0, hi0, lo1, hi1;
        lw_axis_span(s0, g->d[0], g->k[0], D, &lo0, &hi0);
        lw_axis_span(s1, g->d[1], g->k[1], H, &lo1, &hi1);
        long outer = 1;
        if (mode == LW_POOL3_AVG)
            outer = lw_taps_inside(s0, g->k[0], g->d[0], pad ? -g->pb[0] : 0, pad ? D + g->pe[0] : D)
                    * lw_taps_inside(s1, g->k[1], g->d[1], pad ? -g->pb[1] : 0, pad ? H + g->pe[1] : H);
        for (long ow = 0; ow < OW; ow++) {
            const long s2 = ow * g->s[2] - g->pb[2];
            long lo2, hi2;
            lw_axis_span(s2, d2, g->k[2], W, &lo2, &hi2);
            float m = -INFINITY;
            long best = -1;
            double acc = 0.0;
            for (long a = lo0; a < hi0; a++) {
                const long i0 = s0 + a * g->d[0];
                for (long b = lo1; b < hi1; b++) {
                    const long i1 = s1 + b * g->d[1];
                    const float *xr = xp + (i0 * H + i1) * W + s2;
                    if (mode == LW_POOL3_MAX) {
                        const long base = i0 * step[0] + i1 * step[1];
                        for (long c = lo2; c < hi2; c++) {
                            const float v = xr[c * d2];
                            if (v > m || best < 0) best = base + (s2 + c * d2) * step[2];
                            m = v > m ? v : m;
                        }
                    } else if (mode == LW_POOL3_AVG) {
                        for (long c = lo2; c < hi2; c++) acc += xr[c * d2];
                    } else {
                        for (long c = lo2; c < hi2; c++) {
                            const double av = fabs((double)xr[c * d2]);
                            acc += p == 1.0 ? av : p == 2.0 ? av * av : pow(av, p);
                        }
                    }
                }
            }
            const long o = r * OW + ow;
            if (mode == LW_POOL3_MAX) {
                y[o] = m;
                if (idx) idx[o] = t * plane + best;
            } else if (mode == LW_POOL3_AVG) {
                const long cols =
                    lw_taps_inside(s2, g->k[2], d2, pad ? -g->pb[2] : 0, pad ? W + g->pe[2] : W);
                y[o] = (float)(acc / (double)(outer * cols));
            } else {
                y[o] = (float)(p == 1.0 ? acc : p == 2.0 ? sqrt(acc) : pow(acc, 1.0 / p));
            }
        }
    }
}

/* Global average / max over the P spatial positions of each of the given planes, LW_VEC lanes at a time:
 * the max as the compare-select x > m ? x : m per lane, then across lanes (NaN skipped, the result the
 * sequential loop gives), the average from double lane sums added pairwise. Threads split the planes from
 * 16384 inputs (MobileNetV2's 1280 x 7 x 7: 0.025 -> 0.011 ms at 2 threads, 0.016 -> 0.014 at 1). */
static void lw_global_pool(int nt, const float *x, float *y, long planes, long P, int is_max) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * P > 16384)
    for (long t = 0; t < planes; t++) {
        const float *xp = x + t * P;
        long i = 0;
        if (is_max) {
            lw_vf vm = lw_splat(-INFINITY);
            for (; i + LW_VEC <= P; i += LW_VEC) {
                const lw_vf v = lw_load(xp + i);
                vm = lw_vselect((lw_vi)(v > vm), v, vm);
            }
            float m = -INFINITY;
            for (int l = 0; l < LW_VEC; l++) m = vm[l] > m ? vm[l] : m;
            for (; i < P; i++) m = xp[i] > m ? xp[i] : m;
            y[t] = m;
        } else {
            double lanes[LW_VEC] = {0};
            for (; i + LW_VEC <= P; i += LW_VEC)
                for (int l = 0; l < LW_VEC; l++) lanes[l] += xp[i + l];
            for (int w = LW_VEC / 2; w > 0; w /= 2) /* pairwise: no chain of LW_VEC dependent adds per plane */
                for (int l = 0; l < w; l++) lanes[l] += lanes[l + w];
            double s = lanes[0];
            for (; i < P; i++) s += xp[i];
            y[t] = (float)(s / (double)P);
        }
    }
}

/* y = transpose(x) for elements of esize bytes (1, 4, 8 or any): y's dims are shape[0..rank), and output dim d
 * steps the input by stride[d] elements. */
static void lw_transpose(int nt, const void *xv, void *yv, int rank, const long *shape, const long *stride,
                         int esize) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
    long inner = shape[rank - 1], rows = 1;
    for (int d = 0; d < rank - 1; d++) rows *= shape[d];
    const long last = stride[rank - 1];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows * inner * esize > 262144)
    for (long r = 0; r < rows; r++) {
        long rem = r, base = 0;
        for (int d = rank - 2; d >= 0; d--) {
            base += (rem % shape[d]) * stride[d];
            rem /= shape[d];
        }
        unsigned char *yr = y + r * inner * esize;
        const unsigned char *xr = x + base * esize;
        if (last == 1) memcpy(yr, xr, (size_t)(inner * esize));
        else if (esize == 4) {
            float *yf = (float *)yr;
            const float *xf = (const float *)xr;
            for (long j = 0; j < inner; j++) yf[j] = xf[j * last];
        } else if (esize == 1) for (long j = 0; j < inner; j++) yr[j] = xr[j * last];
        else if (esize == 8) for (long j = 0; j < inner; j++) memcpy(yr + 8 * j, xr + 8 * j * last, 8);
        else for (long j = 0; j < inner; j++) memcpy(yr + j * esize, xr + j * last * esize, (size_t)esize);
    }
}

/* Concatenation: the output is [outer][sum of chunk]; input i contributes chunk[i] bytes per outer index. */
static void lw_concat(int nt, const void *const *xs, const long *chunk, int count, long outer, void *yv) {
    long total = 0;
    for (int i = 0; i < count; i++) total += chunk[i];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * total > 1048576)
    for (long o = 0; o < outer; o++) {
        unsigned char *yo = (unsigned char *)yv + o * total;
        for (int i = 0; i < count; i++) {
            memcpy(yo, (const unsigned char *)xs[i] + o * chunk[i], (size_t)chunk[i]);
            yo += chunk[i];
        }
    }
}

/* y[n][c][p] = x[n][c][p] * scale[c] + shift[c] (inference BatchNormalization, prepacked). */
static void lw_scale_shift(int nt, const float *x, float *y, long N, long C, long P, const float *scale,
                           const float *shift) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * C * P > 65536)
    for (long t = 0; t < N * C; t++) {
        const float s = scale[t % C], b = shift[t % C];
        const float *xp = x + t * P;
        float *yp = y + t * P;
        for (long p = 0; p < P; p++) yp[p] = xp[p] * s + b;
    }
}

/* A plain copy of n bytes (lowering::Copy), split across threads when large. */
static void lw_copy(int nt, void *y, const void *x, long n) {
    const long chunk = 1L << 18, blocks = LW_CDIV(n, chunk);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && blocks > 1)
    for (long b = 0; b < blocks; b++)
        memcpy((unsigned char *)y + b * chunk, (const unsigned char *)x + b * chunk,
               (size_t)LW_MIN(chunk, n - b * chunk));
}
