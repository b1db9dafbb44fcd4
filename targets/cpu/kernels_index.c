/* kernels_index.c: gather, slice, pad and other indexing kernels (cpu target).
 *
 * Every kernel here moves elements of `esize` bytes without looking at them (any stored type: float32,
 * int8/uint8/bool, int32, int64), except TopK (compares) and linear and cubic Resize (float32 arithmetic).
 *
 * Out-of-range indices (Gather, GatherElements, GatherND): ONNX Runtime fails the run, and so does lw_run:
 * the kernel sets *status (lw_ctx.status) to LW_STATUS_INDEX_RANGE, which lw_run returns and the runtime
 * raises as an error. The kernels never read outside the data: an element whose index is out of range is
 * written as zero bytes (0, 0.0f, false) and the rest of the output (and of the run) is computed normally.
 * Indices in [-n, 0) count from the end, as ONNX says.
 */
#include <stdlib.h>

/* lw_run's result when a gather met an out-of-range index (runtime/backends/cpu.py names it). */
#define LW_STATUS_INDEX_RANGE 3

/* Copy one element of esize bytes; the common sizes compile to single moves. */
static inline void lw_elem_copy(unsigned char *dst, const unsigned char *src, int esize) {
    switch (esize) {
    case 1: *dst = *src; break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    default: memcpy(dst, src, (size_t)esize); break;
    }
}

/* dst[0..count) = the esize-byte element at value. */
static void lw_fill(void *dstv, const void *value, long count, int esize) {
    unsigned char *dst = (unsigned char *)dstv;
    const unsigned char *v = (const unsigned char *)value;
    int zero = 1;
    for (int b = 0; b < esize; b++) zero &= v[b] == 0;
    if (zero) { memset(dst, 0, (size_t)(count * esize)); return; }
    if (esize == 1) { memset(dst, v[0], (size_t)count); return; }
    if (esize == 4) {
        uint32_t w; memcpy(&w, v, 4);
        for (long i = 0; i < count; i++) memcpy(dst + 4 * i, &w, 4);
        return;
    }
    if (esize == 8) {
        uint64_t w; memcpy(&w, v, 8);
        for (long i = 0; i < count; i++) memcpy(dst + 8 * i, &w, 8);
        return;
    }
    for (long i = 0; i < count; i++) memcpy(dst + i * esize, v, (size_t)esize);
}

/* An index read from an int64 or int32 tensor, moved into [0, n); -1 when out of range. */
static inline long lw_index_at(const void *idx, int idx64, long k, long n) {
    long i = idx64 ? (long)((const int64_t *)idx)[k] : (long)((const int32_t *)idx)[k];
    if (i < 0) i += n;
    return i >= 0 && i < n ? i : -1;
}

/* y = the strided view of x with dims shape[0..rank) where dim d steps x by stride[d] elements (any sign;
 * 0 repeats): Slice (start offset folded into x, steps as strides), Expand (0 strides) and Tile (each axis
 * split into [repeat][size] with the repeat stride 0). */
static void lw_strided_copy(int nt, const void *xv, void *yv, int rank, const long *shape,
                            const long *stride, int esize) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
    const long inner = shape[rank - 1], last = stride[rank - 1];
    long rows = 1;
    for (int d = 0; d < rank - 1; d++) rows *= shape[d];
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
        else if (last == 0) lw_fill(yr, xr, inner, esize);
        else if (esize == 4) for (long j = 0; j < inner; j++) memcpy(yr + 4 * j, xr + 4 * j * last, 4);
        else if (esize == 8) for (long j = 0; j < inner; j++) memcpy(yr + 8 * j, xr + 8 * j * last, 8);
        else if (esize == 1) for (long j = 0; j < inner; j++) yr[j] = xr[j * last];
        else for (long j = 0; j < inner; j++) memcpy(yr + j * esize, xr + j * last * esize, (size_t)esize);
    }
}

/* Split: x is [outer][sum of chunk] bytes; output i takes chunk[i] bytes of every outer row. */
static void lw_split(int nt, const void *xv, void *const *ys, const long *chunk, int count, long outer) {
    long total = 0;
    for (int i = 0; i < count; i++) total += chunk[i];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * total > 1048576)
    for (long o = 0; o < outer; o++) {
        const unsigned char *xo = (const unsigned char *)xv + o * total;
        for (int i = 0; i < count; i++) {
            memcpy((unsigned char *)ys[i] + o * chunk[i], xo, (size_t)chunk[i]);
            xo += chunk[i];
        }
    }
}

/* Gather along an axis: x is [outer][n][chunk bytes], y is [outer][k][chunk bytes], y[o][j] = x[o][idx[j]]. */
static void lw_gather(int nt, const void *xv, const void *idx, int idx64, void *yv, long outer, long n,
                      long k, long chunk, int *status) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * k * chunk > 262144)
    for (long t = 0; t < outer * k; t++) {
        const long o = t / k, i = lw_index_at(idx, idx64, t % k, n);
        unsigned char *dst = y + t * chunk;
        if (i < 0) {
            memset(dst, 0, (size_t)chunk);
#pragma omp atomic write
            *status = LW_STATUS_INDEX_RANGE;
        } else if (chunk == 4) memcpy(dst, x + (o * n + i) * 4, 4);
        else memcpy(dst, x + (o * n + i) * chunk, (size_t)chunk);
    }
}

/* GatherElements: y has the indices' shape ishape[0..rank); y[p] = x[p with p[axis] = idx[p]], x's dim d
 * stepping xstride[d] elements (the indices may be smaller than x along the other axes). */
static void lw_gather_elements(int nt, const void *xv, const void *idx, int idx64, void *yv, int rank,
                               const long *ishape, const long *xstride, int axis, long n, int esize,
                               int *status) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
    const long inner = ishape[rank - 1];
    const long jstep = axis == rank - 1 ? 0 : xstride[rank - 1];
    long rows = 1;
    for (int d = 0; d < rank - 1; d++) rows *= ishape[d];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows * inner > 65536)
    for (long r = 0; r < rows; r++) {
        long rem = r, base = 0;
        for (int d = rank - 2; d >= 0; d--) {
            if (d != axis) base += (rem % ishape[d]) * xstride[d];
            rem /= ishape[d];
        }
        unsigned char *yr = y + r * inner * esize;
        for (long j = 0; j < inner; j++) {
            const long i = lw_index_at(idx, idx64, r * inner + j, n);
            if (i < 0) {
                memset(yr + j * esize, 0, (size_t)esize);
#pragma omp atomic write
                *status = LW_STATUS_INDEX_RANGE;
            } else lw_elem_copy(yr + j * esize, x + (base + j * jstep + i * xstride[axis]) * esize, esize);
        }
    }
}

/* GatherND: for each of `batches` batches (x batch stride xbatch bytes) and each of its `tuples` index
 * tuples of k int64 indices, copy the chunk-byte slice x[batch][i0]...[ik-1]; dim j has size dims[j] and
 * steps steps[j] chunks. */
static void lw_gather_nd(int nt, const void *xv, const int64_t *idx, void *yv, long batches, long tuples,
                         int k, const long *dims, const long *steps, long xbatch, long chunk, int *status) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && batches * tuples * chunk > 262144)
    for (long t = 0; t < batches * tuples; t++) {
        long off = 0;
        int valid = 1;
        for (int j = 0; j < k; j++) {
            const long i = lw_index_at(idx, 1, t * k + j, dims[j]);
            valid &= i >= 0;
            off += (i < 0 ? 0 : i) * steps[j];
        }
        unsigned char *dst = y + t * chunk;
        if (valid) memcpy(dst, x + (t / tuples) * xbatch + off * chunk, (size_t)chunk);
        else {
            memset(dst, 0, (size_t)chunk);
#pragma omp atomic write
            *status = LW_STATUS_INDEX_RANGE;
        }
    }
}

enum { LW_PAD_CONSTANT = 0, LW_PAD_REFLECT, LW_PAD_EDGE, LW_PAD_WRAP };

/* The input position that output position o (i.e. o - begin) reads along an axis of n elements, or -1
 * for the constant padding. */
static inline long lw_pad_source(long j, long n, int mode) {
    if (j >= 0 && j < n) return j;
    switch (mode) {
    case LW_PAD_EDGE: return j < 0 ? 0 : n - 1;
    case LW_PAD_WRAP: return ((j % n) + n) % n;
    case LW_PAD_REFLECT: {
        if (n == 1) return 0;
        const long period = 2 * (n - 1);
        j = ((j % period) + period) % period;
        return j < n ? j : period - j;
    }
    default: return -1;
    }
}

/* Pad: y (oshape) from x (ishape), output position o along dim d reading input o - begin[d] (begin may be
 * negative: cropping); `value` is the constant mode's element. */
static void lw_pad(int nt, const void *xv, void *yv, int rank, const long *ishape, const long *oshape,
                   const long *begin, int mode, const void *value, int esize) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
    const long W = ishape[rank - 1], OW = oshape[rank - 1], b = begin[rank - 1];
    /* the output columns that read the input directly: [lo, hi) */
    const long lo = LW_MIN(OW, LW_MAX(0, b)), hi = LW_MAX(lo, LW_MIN(OW, W + b));
    long rows = 1;
    for (int d = 0; d < rank - 1; d++) rows *= oshape[d];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows * OW * esize > 262144)
    for (long r = 0; r < rows; r++) {
        long rem = r, src = 0, step = 1; /* src counts input rows */
        int inside = 1;
        for (int d = rank - 2; d >= 0; d--) {
            const long j = lw_pad_source(rem % oshape[d] - begin[d], ishape[d], mode);
            inside &= j >= 0;
            src += (j < 0 ? 0 : j) * step;
            step *= ishape[d];
            rem /= oshape[d];
        }
        unsigned char *yr = y + r * OW * esize;
        if (!inside) { lw_fill(yr, value, OW, esize); continue; }
        const unsigned char *xr = x + src * W * esize;
        if (hi > lo) memcpy(yr + lo * esize, xr + (lo - b) * esize, (size_t)((hi - lo) * esize));
        if (mode == LW_PAD_CONSTANT) {
            lw_fill(yr, value, lo, esize);
            lw_fill(yr + hi * esize, value, OW - hi, esize);
            continue;
        }
        for (long c = 0; c < lo; c++) lw_elem_copy(yr + c * esize, xr + lw_pad_source(c - b, W, mode) * esize, esize);
        for (long c = hi; c < OW; c++) lw_elem_copy(yr + c * esize, xr + lw_pad_source(c - b, W, mode) * esize, esize);
    }
}

/* Trilu over batches of [rows][cols] matrices: keep column c of row i where c - i >= k (upper) or
 * c - i <= k (lower), zero the rest. */
static void lw_trilu(int nt, const void *xv, void *yv, long batches, long rows, long cols, long k, int upper,
                     int esize) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && batches * rows * cols * esize > 262144)
    for (long t = 0; t < batches * rows; t++) {
        const long i = t % rows;
        long lo = upper ? i + k : 0, hi = upper ? cols : i + k + 1;
        lo = LW_MIN(cols, LW_MAX(0, lo));
        hi = LW_MAX(lo, LW_MIN(cols, hi));
        unsigned char *yr = y + t * cols * esize;
        const unsigned char *xr = x + t * cols * esize;
        memset(yr, 0, (size_t)(lo * esize));
        memcpy(yr + lo * esize, xr + lo * esize, (size_t)((hi - lo) * esize));
        memset(yr + hi * esize, 0, (size_t)((cols - hi) * esize));
    }
}

/* Nearest Resize of the last two axes: planes of [H][W] -> [OH][OW], output (r, c) copying input
 * (iy[r], ix[c]); a row reading the same input row as the previous one is copied from it. */
static void lw_resize_nearest(int nt, const void *xv, void *yv, long planes, long H, long W, long OH,
                              long OW, const int64_t *iy, const int64_t *ix, int esize) {
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * OH * OW > 65536)
    for (long p = 0; p < planes; p++) {
        for (long r = 0; r < OH; r++) {
            unsigned char *yr = y + (p * OH + r) * OW * esize;
            if (r > 0 && iy[r] == iy[r - 1]) { memcpy(yr, yr - OW * esize, (size_t)(OW * esize)); continue; }
            const unsigned char *xr = x + (p * H + iy[r]) * W * esize;
            if (esize == 4) for (long c = 0; c < OW; c++) memcpy(yr + 4 * c, xr + 4 * ix[c], 4);
            else if (esize == 1) for (long c = 0; c < OW; c++) yr[c] = xr[ix[c]];
            else for (long c = 0; c < OW; c++) lw_elem_copy(yr + c * esize, xr + ix[c] * esize, esize);
        }
    }
}

/* Linear Resize of the last two axes (float32): output (r, c) = sum over the two source rows y0/y1 and
 * columns x0/x1 with weights wy0/wy1, wx0/wx1 (precomputed by the compiler). */
static void lw_resize_linear(int nt, const float *x, float *y, long planes, long H, long W, long OH, long OW,
                             const int64_t *y0, const int64_t *y1, const float *wy0, const float *wy1,
                             const int64_t *x0, const int64_t *x1, const float *wx0, const float *wx1) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * OH * OW > 16384)
    for (long t = 0; t < planes * OH; t++) {
        const long p = t / OH, r = t % OH;
        const float *a = x + (p * H + y0[r]) * W, *b = x + (p * H + y1[r]) * W;
        const float ta = wy0[r], tb = wy1[r];
        float *yr = y + t * OW;
        for (long c = 0; c < OW; c++) {
            const float top = wx0[c] * a[x0[c]] + wx1[c] * a[x1[c]];
            const float bottom = wx0[c] * b[x0[c]] + wx1[c] * b[x1[c]];
            yr[c] = ta * top + tb * bottom;
        }
    }
}

/* Separable Resize of the last two axes (float32) for filters of any width (cubic, antialiased linear or
 * cubic): output (r, c) = sum_a wy[r][a] * sum_b wx[c][b] * x(iy[r][a], ix[c][b]), KY taps per output row
 * and KX per output column (index tables clamped into the input, unused taps of weight 0, all precomputed
 * by the compiler). Pass 1 filters every input row along W into tmp ([chunk][H][OW]), pass 2 filters the
 * columns of tmp along H: the horizontal-then-vertical order ONNX Runtime sums in. Planes go through tmp
 * `chunk` at a time (tmp holds chunk * H * OW floats, the kernel's workspace). */
static void lw_resize_taps(int nt, const float *x, float *y, float *tmp, long planes, long chunk, long H, long W,
                           long OH, long OW, int KY, const int64_t *iy, const float *wy, int KX,
                           const int64_t *ix, const float *wx) {
    for (long p0 = 0; p0 < planes; p0 += chunk) {
        const long np_ = LW_MIN(chunk, planes - p0);
        const float *xp = x + p0 * H * W;
        float *yp = y + p0 * OH * OW;
#pragma omp parallel num_threads(nt) if (nt > 1 && np_ * (H + OH) * OW * (KX + KY) > 65536)
        {
#pragma omp for schedule(static)
            for (long t = 0; t < np_ * H; t++) {
                const float *xr = xp + t * W;
                float *tr = tmp + t * OW;
                for (long c = 0; c < OW; c++) {
                    const int64_t *ic = ix + c * KX;
                    const float *wc = wx + c * KX;
                    float acc = 0.0f;
                    for (int b = 0; b < KX; b++) acc += wc[b] * xr[ic[b]];
                    tr[c] = acc;
                }
            }
#pragma omp for schedule(static)
            for (long t = 0; t < np_ * OH; t++) {
                const long p = t / OH, r = t % OH;
                const int64_t *ir = iy + r * KY;
                const float *wr = wy + r * KY;
                float *yr = yp + t * OW;
                for (long c = 0; c < OW; c++) yr[c] = 0.0f;
                for (int a = 0; a < KY; a++) {
                    const float *tr = tmp + (p * H + ir[a]) * OW;
                    const float w = wr[a];
                    for (long c = 0; c < OW; c++) yr[c] += w * tr[c];
                }
            }
        }
    }
}

/* Resize of one axis (float32): x viewed as [outer][n][inner] -> y [outer][m][inner], output slice i the
 * sum over its K taps of w[i][k] * input slice idx[i][k] (tables precomputed by the compiler): one pass of
 * a Resize that resizes axes other than the last two. */
static void lw_resample_axis(int nt, const float *x, float *y, long outer, long n, long m, long inner, int K,
                             const int64_t *idx, const float *w) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * m * inner * K > 65536)
    for (long t = 0; t < outer * m; t++) {
        const long o = t / m, i = t % m;
        const float *xo = x + o * n * inner;
        float *yr = y + t * inner;
        for (long j = 0; j < inner; j++) yr[j] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float wk = w[i * K + k];
            const float *xr = xo + idx[i * K + k] * inner;
            for (long j = 0; j < inner; j++) yr[j] += wk * xr[j];
        }
    }
}

/* tf_crop_and_resize's extrapolation along one axis: y viewed as [outer][m][inner], every slice i whose
 * source lies outside the input (mask[i]) becomes the esize-byte `value`. */
static void lw_resize_fill_axis(int nt, void *yv, long outer, long m, long inner, const uint8_t *mask,
                                const void *value, int esize) {
    unsigned char *y = (unsigned char *)yv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * m * inner > 65536)
    for (long t = 0; t < outer * m; t++)
        if (mask[t % m]) lw_fill(y + t * inner * esize, value, inner, esize);
}

/* TopK along the middle axis of [outer][n][inner]: the k best (largest or smallest) values and their
 * int64 indices, best first, ties by the lower index (as ONNX Runtime orders them). A heap of the k best
 * so far with the worst on top: most elements cost one comparison with the top (O(n log k) at worst),
 * then the heap is emptied worst first into the output's back. NaN compares false: it is never taken
 * over a number it follows. The heap is per thread (k entries). */
#define LW_TOPK_BLOCK 16
#define LW_DEFINE_TOPK(NAME, T)                                                                             \
    static inline int NAME##_worse(T va, long ia, T vb, long ib, int largest) {                           \
        return largest ? (va < vb || (va == vb && ia > ib)) : (va > vb || (va == vb && ia > ib));          \
    }                                                                                                     \
    static void NAME##_sift(T *hv, long *hi, long size, long pos, int largest) {                          \
        for (;;) {                                                                                        \
            long c = 2 * pos + 1;                                                                         \
            if (c >= size) return;                                                                        \
            if (c + 1 < size && NAME##_worse(hv[c + 1], hi[c + 1], hv[c], hi[c], largest)) c++;           \
            if (!NAME##_worse(hv[c], hi[c], hv[pos], hi[pos], largest)) return;                           \
            T tv = hv[c]; hv[c] = hv[pos]; hv[pos] = tv;                                                  \
            long ti = hi[c]; hi[c] = hi[pos]; hi[pos] = ti;                                               \
            pos = c;                                                                                      \
        }                                                                                                 \
    }                                                                                                     \
    static inline void NAME##_offer(T *hv, long *hi, long k, T v, long j, int largest) {                 \
        if (NAME##_worse(hv[0], hi[0], v, j, largest)) {                                                  \
            hv[0] = v; hi[0] = j;                                                                         \
            NAME##_sift(hv, hi, k, 0, largest);                                                           \
        }                                                                                                 \
    }                                                                                                     \
    static void NAME(int nt, const T *x, T *vals, int64_t *idx, long outer, long n, long inner, long k,   \
                     int largest) {                                                                       \
        _Pragma("omp parallel num_threads(nt) if (nt > 1 && outer * inner * n > 65536)")                   \
        {                                                                                                 \
            T *hv = (T *)malloc(sizeof(T) * (size_t)k);                                                   \
            long *hi = (long *)malloc(sizeof(long) * (size_t)k);                                          \
            _Pragma("omp for schedule(static)")                                                            \
            for (long t = 0; t < outer * inner; t++) {                                                    \
                const long o = t / inner, in = t % inner;                                                 \
                const T *xr = x + o * n * inner + in;                                                     \
                T *vr = vals + o * k * inner + in;                                                        \
                int64_t *ir = idx + o * k * inner + in;                                                   \
                if (hv == NULL || hi == NULL) { /* out of memory: a defined (if wrong) result */          \
                    for (long j = 0; j < k; j++) { vr[j * inner] = xr[j * inner]; ir[j * inner] = j; }    \
                    continue;                                                                             \
                }                                                                                         \
                for (long j = 0; j < k; j++) { hv[j] = xr[j * inner]; hi[j] = j; }                        \
                for (long j = k / 2 - 1; j >= 0; j--) NAME##_sift(hv, hi, k, j, largest);                 \
                long j = k;                                                                               \
                for (; j + LW_TOPK_BLOCK <= n; j += LW_TOPK_BLOCK) {                                      \
                    /* a block with nothing better than the top is skipped by one vector pass */          \
                    const T top = hv[0];                                                                  \
                    int any = 0;                                                                          \
                    if (largest) for (int b = 0; b < LW_TOPK_BLOCK; b++) any |= xr[(j + b) * inner] > top; \
                    else for (int b = 0; b < LW_TOPK_BLOCK; b++) any |= xr[(j + b) * inner] < top;        \
                    if (any)                                                                              \
                        for (long m = j; m < j + LW_TOPK_BLOCK; m++)                                      \
                            NAME##_offer(hv, hi, k, xr[m * inner], m, largest);                           \
                }                                                                                         \
                for (; j < n; j++) NAME##_offer(hv, hi, k, xr[j * inner], j, largest);                    \
                for (long size = k; size > 0; size--) {                                                   \
                    vr[(size - 1) * inner] = hv[0]; ir[(size - 1) * inner] = hi[0];                       \
                    hv[0] = hv[size - 1]; hi[0] = hi[size - 1];                                           \
                    NAME##_sift(hv, hi, size - 1, 0, largest);                                            \
                }                                                                                         \
            }                                                                                             \
            free(hv); free(hi);                                                                           \
        }                                                                                                 \
    }

LW_DEFINE_TOPK(lw_topk_f32, float)
LW_DEFINE_TOPK(lw_topk_i32, int32_t)
LW_DEFINE_TOPK(lw_topk_i64, int64_t)
LW_DEFINE_TOPK(lw_topk_u64, uint64_t)
