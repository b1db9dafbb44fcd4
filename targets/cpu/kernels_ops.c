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

/* Pool one output row: combine every valid tap into the row with vectorizable column loops (strides 1
 * and 2 get their own loops), then divide averages by the separable count of counted taps. */
static void lw_pool_row(const lw_pool_geom *g, const float *xp, float *row, long oh) {
    const float init = g->is_max ? -INFINITY : 0.0f;
    for (long ow = 0; ow < g->OW; ow++) row[ow] = init;
    const long sw = g->SW;
    for (long kh = 0; kh < g->KH; kh++) {
        long ih = oh * g->SH - g->PH + kh * g->DH;
        if (ih < 0 || ih >= g->H) continue;
        const float *xr = xp + ih * g->W;
        for (long kw = 0; kw < g->KW; kw++) {
            long off = kw * g->DW - g->PW, lo, hi;
            lw_tap_range(off, sw, g->W, g->OW, &lo, &hi);
            const float *src = xr + off;
            if (g->is_max) {
                if (sw == 1) for (long ow = lo; ow < hi; ow++) row[ow] = LW_MAX(src[ow], row[ow]);
                else if (sw == 2) for (long ow = lo; ow < hi; ow++) row[ow] = LW_MAX(src[2 * ow], row[ow]);
                else for (long ow = lo; ow < hi; ow++) row[ow] = LW_MAX(src[ow * sw], row[ow]);
            } else {
                if (sw == 1) for (long ow = lo; ow < hi; ow++) row[ow] += src[ow];
                else if (sw == 2) for (long ow = lo; ow < hi; ow++) row[ow] += src[2 * ow];
                else for (long ow = lo; ow < hi; ow++) row[ow] += src[ow * sw];
            }
        }
    }
    if (g->is_max) return;
    const int pad = g->count_include_pad;
    const long rows = lw_taps_inside(oh * g->SH - g->PH, g->KH, g->DH, pad ? -g->PH : 0,
                                     pad ? g->H + g->PHE : g->H);
    for (long ow = 0; ow < g->OW; ow++) {
        long cols = lw_taps_inside(ow * sw - g->PW, g->KW, g->DW, pad ? -g->PW : 0,
                                   pad ? g->W + g->PWE : g->W);
        row[ow] = row[ow] / (float)(rows * cols);
    }
}

static void lw_pool2d(int nt, const lw_pool_geom *g, const float *x, float *y) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && g->planes * g->OH * g->OW > 16384)
    for (long t = 0; t < g->planes; t++)
        for (long oh = 0; oh < g->OH; oh++)
            lw_pool_row(g, x + t * g->H * g->W, y + (t * g->OH + oh) * g->OW, oh);
}

/* Global average / max over the P spatial positions of each of the given planes. */
static void lw_global_pool(int nt, const float *x, float *y, long planes, long P, int is_max) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * P > 65536)
    for (long t = 0; t < planes; t++) {
        const float *xp = x + t * P;
        if (is_max) {
            float m = -INFINITY;
            for (long i = 0; i < P; i++) m = xp[i] > m ? xp[i] : m;
            y[t] = m;
        } else {
            double s = 0.0;
            for (long i = 0; i < P; i++) s += xp[i];
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
