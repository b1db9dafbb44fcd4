/* kernels_math.c: reductions, softmax and arg-extrema (cpu target).
 *
 * Every kernel views its tensor as [outer][len][inner] and works along the middle axis: on contiguous rows
 * when inner == 1 (vector accumulators across the row), else on blocks of up to LW_RED_BLOCK inner
 * positions whose loops all run along the contiguous inner axis (so they vectorize without reassociating
 * anything), parallel over (outer, block) pairs. The generator collapses any set of reduced axes into one
 * or more such passes.
 */

#define LW_RED_BLOCK 256

enum { LW_REDUCE_SUM = 0, LW_REDUCE_MEAN, LW_REDUCE_MAX, LW_REDUCE_MIN };

/* Sum (or mean) of one contiguous row: LW_VEC partial sums, combined in double. */
static float lw_sum_row(const float *x, long len, int mean) {
    lw_vf vs = (lw_vf){0};
    long a = 0;
    for (; a + LW_VEC <= len; a += LW_VEC) vs += lw_load(x + a);
    double s = 0.0;
    for (int i = 0; i < LW_VEC; i++) s += vs[i];
    for (; a < len; a++) s += x[a];
    return (float)(mean ? s / (double)len : s);
}

/* Max (is_max) or min of one contiguous row; NaN propagates, as in the reference. */
static float lw_extreme_row(const float *x, long len, int is_max) {
    lw_vf vm = lw_splat(is_max ? -INFINITY : INFINITY);
    long a = 0;
    for (; a + LW_VEC <= len; a += LW_VEC) {
        lw_vf v = lw_load(x + a);
        lw_vi take = is_max ? (lw_vi)(v > vm) : (lw_vi)(v < vm);
        vm = lw_vselect(take | (lw_vi)(v != v), v, vm);
    }
    float m = is_max ? -INFINITY : INFINITY;
    for (int i = 0; i < LW_VEC; i++) m = is_max ? lw_maxf(m, vm[i]) : lw_minf(m, vm[i]);
    for (; a < len; a++) m = is_max ? lw_maxf(m, x[a]) : lw_minf(m, x[a]);
    return m;
}

/* One block of n inner positions: y[i] = op over a of xo[a * inner + i]. */
static void lw_reduce_block(const float *xo, float *y, long len, long inner, long n, int op) {
    if (op == LW_REDUCE_SUM || op == LW_REDUCE_MEAN) {
        double s[LW_RED_BLOCK];
        for (long i = 0; i < n; i++) s[i] = 0.0;
        for (long a = 0; a < len; a++)
            for (long i = 0; i < n; i++) s[i] += xo[a * inner + i];
        const double scale = op == LW_REDUCE_MEAN ? 1.0 / (double)len : 1.0;
        for (long i = 0; i < n; i++) y[i] = (float)(s[i] * scale);
        return;
    }
    float m[LW_RED_BLOCK];
    for (long i = 0; i < n; i++) m[i] = op == LW_REDUCE_MAX ? -INFINITY : INFINITY;
    if (op == LW_REDUCE_MAX) {
        for (long a = 0; a < len; a++)
            for (long i = 0; i < n; i++) m[i] = lw_maxf(m[i], xo[a * inner + i]);
    } else {
        for (long a = 0; a < len; a++)
            for (long i = 0; i < n; i++) m[i] = lw_minf(m[i], xo[a * inner + i]);
    }
    for (long i = 0; i < n; i++) y[i] = m[i];
}

/* y[o][i] = op over a of x[o][a][i] (op: LW_REDUCE_*). */
static void lw_reduce(int nt, const float *x, float *y, long outer, long len, long inner, int op) {
    if (inner == 1) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer > 1 && outer * len > 65536)
        for (long o = 0; o < outer; o++) {
            const float *xo = x + o * len;
            y[o] = op <= LW_REDUCE_MEAN ? lw_sum_row(xo, len, op == LW_REDUCE_MEAN)
                                        : lw_extreme_row(xo, len, op == LW_REDUCE_MAX);
        }
        return;
    }
    const long blocks = LW_CDIV(inner, LW_RED_BLOCK);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * len * inner > 65536)
    for (long t = 0; t < outer * blocks; t++) {
        const long o = t / blocks, i0 = (t % blocks) * LW_RED_BLOCK;
        lw_reduce_block(x + o * len * inner + i0, y + o * inner + i0, len, inner,
                        LW_MIN(LW_RED_BLOCK, inner - i0), op);
    }
}

/* Softmax of one contiguous row: vector max and sum accumulators, exp inlined and vectorized. */
static void lw_softmax_row(const float *x, float *y, long len) {
    lw_vf vm = lw_splat(-INFINITY), vs = (lw_vf){0};
    long a = 0;
    for (; a + LW_VEC <= len; a += LW_VEC) {
        lw_vf v = lw_load(x + a);
        lw_vi gt = (lw_vi)(v > vm);
        vm = (lw_vf)(((lw_vi)v & gt) | ((lw_vi)vm & ~gt));
    }
    float m = -INFINITY, s = 0.0f;
    for (int i = 0; i < LW_VEC; i++) m = vm[i] > m ? vm[i] : m;
    for (; a < len; a++) m = x[a] > m ? x[a] : m;
    for (a = 0; a < len; a++) y[a] = lw_expf(x[a] - m);
    for (a = 0; a + LW_VEC <= len; a += LW_VEC) vs += lw_load(y + a);
    for (int i = 0; i < LW_VEC; i++) s += vs[i];
    for (; a < len; a++) s += y[a];
    for (a = 0; a < len; a++) y[a] = y[a] / s;
}

/* LogSoftmax of one contiguous row: x - max - log(sum(exp(x - max))); y holds the exponentials first. */
static void lw_log_softmax_row(const float *x, float *y, long len) {
    const float m = lw_extreme_row(x, len, 1);
    for (long a = 0; a < len; a++) y[a] = lw_expf(x[a] - m);
    const float shift = m + logf(lw_sum_row(y, len, 0));
    for (long a = 0; a < len; a++) y[a] = x[a] - shift;
}

/* Softmax (or with is_log LogSoftmax) along the middle axis of [outer][len][inner]. */
static void lw_softmax(int nt, const float *x, float *y, long outer, long len, long inner, int is_log) {
    if (inner == 1) {
        if (nt > 1 && outer * len > 16384) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (long o = 0; o < outer; o++) {
                if (is_log) lw_log_softmax_row(x + o * len, y + o * len, len);
                else lw_softmax_row(x + o * len, y + o * len, len);
            }
            return;
        }
        /* small: no OpenMP region at all (one whose if clause fails still costs ~0.2 us) */
        for (long o = 0; o < outer; o++) {
            if (is_log) lw_log_softmax_row(x + o * len, y + o * len, len);
            else lw_softmax_row(x + o * len, y + o * len, len);
        }
        return;
    }
    const long blocks = LW_CDIV(inner, LW_RED_BLOCK);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * len * inner > 16384)
    for (long t = 0; t < outer * blocks; t++) {
        const long o = t / blocks, i0 = (t % blocks) * LW_RED_BLOCK;
        const long n = LW_MIN(LW_RED_BLOCK, inner - i0);
        const float *xo = x + o * len * inner + i0;
        float *yo = y + o * len * inner + i0;
        float m[LW_RED_BLOCK], s[LW_RED_BLOCK];
        for (long i = 0; i < n; i++) { m[i] = -INFINITY; s[i] = 0.0f; }
        for (long a = 0; a < len; a++)
            for (long i = 0; i < n; i++) m[i] = xo[a * inner + i] > m[i] ? xo[a * inner + i] : m[i];
        for (long a = 0; a < len; a++)
            for (long i = 0; i < n; i++) {
                float e = lw_expf(xo[a * inner + i] - m[i]);
                yo[a * inner + i] = e;
                s[i] += e;
            }
        if (is_log) {
            for (long i = 0; i < n; i++) m[i] += logf(s[i]);
            for (long a = 0; a < len; a++)
                for (long i = 0; i < n; i++) yo[a * inner + i] = xo[a * inner + i] - m[i];
        } else {
            for (long a = 0; a < len; a++)
                for (long i = 0; i < n; i++) yo[a * inner + i] = yo[a * inner + i] / s[i];
        }
    }
}

/* ArgMax (is_max) / ArgMin along the middle axis into int64 indices: the first extreme, or with last the
 * last one. One loop per variant so each vectorizes along inner. */
#define LW_ARG_LOOP(BETTER)                                                              \
    for (long a = 1; a < len; a++)                                                       \
        for (long i = 0; i < n; i++) {                                                   \
            const float v = xo[a * inner + i];                                           \
            const int better = BETTER;                                                   \
            best[i] = better ? v : best[i];                                              \
            index[i] = better ? a : index[i];                                            \
        }

static void lw_arg_extreme(int nt, const float *x, int64_t *y, long outer, long len, long inner, int is_max,
                           int last) {
    const long blocks = LW_CDIV(inner, LW_RED_BLOCK);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * len * inner > 65536)
    for (long t = 0; t < outer * blocks; t++) {
        const long o = t / blocks, i0 = (t % blocks) * LW_RED_BLOCK;
        const long n = LW_MIN(LW_RED_BLOCK, inner - i0);
        const float *xo = x + o * len * inner + i0;
        float best[LW_RED_BLOCK];
        int64_t index[LW_RED_BLOCK];
        for (long i = 0; i < n; i++) { best[i] = xo[i]; index[i] = 0; }
        if (is_max && last) { LW_ARG_LOOP(v >= best[i]) }
        else if (is_max) { LW_ARG_LOOP(v > best[i]) }
        else if (last) { LW_ARG_LOOP(v <= best[i]) }
        else { LW_ARG_LOOP(v < best[i]) }
        for (long i = 0; i < n; i++) y[o * inner + i0 + i] = index[i];
    }
}

/* ---- any reduction over any axes, the axes known at compile time or read at run time ----
 * The reduced axes are the set bits of `mask` over x's `rank` dimensions `shape`; y holds the kept
 * dimensions in order (ny elements). One sequential pass over x in storage order accumulates each element
 * into its output's double accumulator (acc: ny doubles of workspace; LogSumExp also ny more for the
 * maxima). Empty reductions give the ONNX identities: 0 (sums, L1, L2), 1 (product), -inf (max, LogSum,
 * LogSumExp), +inf (min), NaN (mean). */
enum {
    LW_REDUCE_PROD = 4, LW_REDUCE_L1, LW_REDUCE_L2, LW_REDUCE_SUMSQ, LW_REDUCE_LOGSUM, LW_REDUCE_LOGSUMEXP
};

/* Status lw_run returns when a run-time operand (Reduce* axes) contradicts the compiled output shape. */
#define LW_STATUS_OPERAND 4

static void lw_reduce_any(const float *x, float *y, double *acc, int rank, const long *shape, unsigned mask,
                          long ny, int op) {
    long ostride[16], count = 1, nx = 1, step = 1;
    for (int d = rank - 1; d >= 0; d--) {
        nx *= shape[d];
        if (mask >> d & 1u) { ostride[d] = 0; count *= shape[d]; }
        else { ostride[d] = step; step *= shape[d]; }
    }
    const double init = op == LW_REDUCE_PROD                               ? 1.0
                        : op == LW_REDUCE_MAX || op == LW_REDUCE_LOGSUMEXP ? -INFINITY
                        : op == LW_REDUCE_MIN                              ? INFINITY
                                                                           : 0.0;
    double *top = acc + ny; /* LogSumExp: the maxima, then acc the sums of exp(x - max) */
    for (long o = 0; o < ny; o++) { acc[o] = init; if (op == LW_REDUCE_LOGSUMEXP) top[o] = -INFINITY; }
    for (int phase = op == LW_REDUCE_LOGSUMEXP ? 0 : 1; phase < 2; phase++) {
        if (phase == 1 && op == LW_REDUCE_LOGSUMEXP)
            for (long o = 0; o < ny; o++) acc[o] = 0.0;
        long idx[16] = {0}, o = 0;
        for (long i = 0; i < nx; i++) {
            const double v = x[i];
            double *a = acc + o;
            switch (phase == 0 ? LW_REDUCE_MAX : op) {
            case LW_REDUCE_SUM: case LW_REDUCE_MEAN: *a += v; break;
            case LW_REDUCE_MAX:
                if (phase == 0) { a = top + o; }
                *a = v > *a || v != v ? v : *a; break;
            case LW_REDUCE_MIN: *a = v < *a || v != v ? v : *a; break;
            case LW_REDUCE_PROD: *a *= v; break;
            case LW_REDUCE_L1: *a += fabs(v); break;
            case LW_REDUCE_L2: case LW_REDUCE_SUMSQ: *a += v * v; break;
            case LW_REDUCE_LOGSUM: *a += v; break;
            case LW_REDUCE_LOGSUMEXP: *a += top[o] == -INFINITY ? exp(v) : exp(v - top[o]); break;
            }
            for (int d = rank - 1; d >= 0; d--) { /* next position: the odometer and the output index */
                o += ostride[d];
                if (++idx[d] < shape[d]) break;
                o -= ostride[d] * shape[d];
                idx[d] = 0;
            }
        }
    }
    for (long o = 0; o < ny; o++) {
        const double a = acc[o];
        double r = a;
        if (op == LW_REDUCE_MEAN) r = a / (double)count;
        else if (op == LW_REDUCE_L2) r = sqrt(a);
        else if (op == LW_REDUCE_LOGSUM) r = log(a);
        else if (op == LW_REDUCE_LOGSUMEXP) r = top[o] == -INFINITY ? log(a) : top[o] + log(a);
        y[o] = (float)r;
    }
}

/* The reduced-axes mask of run-time axes (n of them; n == 0: every axis), or -1 when an axis is out of
 * range or the kept dimensions are not the compiled output's (out_rank dims out_shape; keepdims: reduced
 * axes stay as ones). */
static long lw_reduce_mask(const int64_t *axes, long n, int rank, const long *shape, int keepdims,
                           int out_rank, const long *out_shape) {
    unsigned mask = n ? 0u : (1u << rank) - 1u;
    for (long i = 0; i < n; i++) {
        const int64_t a = axes[i];
        if (a < -rank || a >= rank) return -1;
        mask |= 1u << (a < 0 ? a + rank : a);
    }
    int k = 0;
    for (int d = 0; d < rank; d++) {
        const int reduced = mask >> d & 1u;
        if (reduced && !keepdims) continue;
        if (k >= out_rank || out_shape[k] != (reduced ? 1 : shape[d])) return -1;
        k++;
    }
    return k == out_rank ? (long)mask : -1;
}

/* Normalize each of `rows` rows of `len` elements: y = (x - mean) / sqrt(var + eps), or without `center`
 * x / sqrt(mean(x^2) + eps) (statistics in double, two passes), then y * scale[p] (+ bias[p]) with the
 * parameter index p = (row % rmod) * rmul + j / jdiv for element j: RMSNormalization (rmod 1, rmul 0,
 * jdiv 1: per element), InstanceNormalization (rmod C, rmul 1, jdiv len: per channel),
 * GroupNormalization (rmod G, rmul C/G, jdiv spatial size). */
static void lw_norm_rows(int nt, const float *x, float *y, long rows, long len, float eps, int center,
                         const float *scale, const float *bias, long rmod, long rmul, long jdiv) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows > 1 && rows * len > 65536)
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        double mean = 0.0, ss = 0.0;
        if (center) {
            for (long j = 0; j < len; j++) mean += xr[j];
            mean /= (double)len;
        }
        for (long j = 0; j < len; j++) { const double d = xr[j] - mean; ss += d * d; }
        const double inv = 1.0 / sqrt(ss / (double)len + (double)eps);
        const long base = (r % rmod) * rmul;
        for (long j = 0; j < len; j++) {
            const long p = base + j / jdiv;
            double v = (xr[j] - mean) * inv * (double)scale[p];
            if (bias) v += (double)bias[p];
            yr[j] = (float)v;
        }
    }
}

/* Along the middle axis of [outer][len][inner]: Hardmax (kind 0: 1 at the first maximum, else 0) or
 * LpNormalization (kind 1 or 2: x / ||x||_p, the norm in double; 0 where the norm is 0, as ONNX Runtime). */
static void lw_along_axis(const float *x, float *y, long outer, long len, long inner, int kind) {
    for (long o = 0; o < outer; o++)
        for (long i = 0; i < inner; i++) {
            const float *xo = x + o * len * inner + i;
            float *yo = y + o * len * inner + i;
            if (kind == 0) {
                long best = 0;
                for (long a = 1; a < len; a++)
                    if (xo[a * inner] > xo[best * inner]) best = a;
                for (long a = 0; a < len; a++) yo[a * inner] = a == best ? 1.0f : 0.0f;
                continue;
            }
            double n = 0.0;
            for (long a = 0; a < len; a++) {
                const double v = xo[a * inner];
                n += kind == 1 ? fabs(v) : v * v;
            }
            if (kind == 2) n = sqrt(n);
            for (long a = 0; a < len; a++) yo[a * inner] = n == 0.0 ? 0.0f : (float)(xo[a * inner] / n);
        }
}
