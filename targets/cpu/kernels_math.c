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
