/* kernels_sample.c: sampling kernels (cpu target): GridSample, AffineGrid, RoiAlign (float32).
 *
 * Their semantics are lowering/reference/ops_sample.py's (see there for the conventions: coordinate
 * normalisation, padding modes, Detectron's RoiAlign sampling). The grids and boxes are data: every
 * coordinate, tap and weight is computed here, when the model runs, in float arithmetic as ONNX Runtime
 * computes them. CenterCropPad needs no kernel of its own (it is lw_pad of kernels_index.c).
 */

enum { LW_GS_NEAREST = 0, LW_GS_LINEAR = 1, LW_GS_CUBIC = 2 };
enum { LW_GS_ZEROS = 0, LW_GS_BORDER = 1, LW_GS_REFLECTION = 2 };

/* Reflect x at lo and hi until it lies between them (GridSample's reflection padding). */
static inline float lw_gs_reflect(float x, float lo, float hi) {
    const double span = (double)hi - (double)lo;
    if (x >= lo && x <= hi) return x;
    if (span <= 0.0) return lo;
    const int below = x < lo;
    const double d = below ? (double)lo - x : (double)x - hi;
    const double flips = floor(d / span), r = d - flips * span;
    const int even = fmod(flips, 2.0) == 0.0;
    return (float)(below ? (even ? lo + r : hi - r) : (even ? hi - r : lo + r));
}

/* Keys' cubic weights (a = -0.75) of the taps floor(x) - 1 .. floor(x) + 2, t = x - floor(x). */
static inline void lw_gs_cubic(float t, float *w) {
    const float a = -0.75f, t1 = t + 1.0f, r = 1.0f - t, r1 = 2.0f - t;
    w[0] = ((a * t1 - 5.0f * a) * t1 + 8.0f * a) * t1 - 4.0f * a;
    w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
    w[2] = ((a + 2.0f) * r - (a + 3.0f)) * r * r + 1.0f;
    w[3] = ((a * r1 - 5.0f * a) * r1 + 8.0f * a) * r1 - 4.0f * a;
}

/* The taps of one spatial axis of `len` pixels at normalised grid coordinate g: *count taps, pixel index
 * idx[k] (0 when ok[k] is 0: outside with zeros padding, read as 0) and weight w[k]. */
static inline int lw_gs_axis(float g, long len, int mode, int padding, int align, long *idx, float *w,
                             int *ok) {
    const float lo = align ? 0.0f : -0.5f, hi = align ? (float)(len - 1) : (float)len - 0.5f;
    float x = align ? (g + 1.0f) / 2.0f * (float)(len - 1) : ((g + 1.0f) * (float)len - 1.0f) / 2.0f;
    /* infinities and NaN read as far outside: keeps the integer conversions below defined */
    const float far = 1e12f;
    x = x != x ? -far : (x < -far ? -far : (x > far ? far : x));
    if (mode == LW_GS_NEAREST) x = rintf(x);
    if (mode != LW_GS_CUBIC && (x < lo || x > hi)) { /* cubic pads each tap instead */
        if (padding == LW_GS_BORDER) x = x < 0.0f ? 0.0f : (x > (float)(len - 1) ? (float)(len - 1) : x);
        else if (padding == LW_GS_REFLECTION) x = lw_gs_reflect(x, lo, hi);
    }
    int n;
    long base;
    if (mode == LW_GS_NEAREST) {
        n = 1;
        idx[0] = (long)x; /* truncation, as the reference's integer cast */
        w[0] = 1.0f;
    } else {
        const float f = floorf(x), t = x - f;
        base = (long)f;
        if (mode == LW_GS_LINEAR) {
            n = 2;
            idx[0] = base;
            idx[1] = base + 1;
            w[0] = 1.0f - t;
            w[1] = t;
        } else {
            n = 4;
            for (int k = 0; k < 4; k++) idx[k] = base - 1 + k;
            lw_gs_cubic(t, w);
        }
    }
    for (int k = 0; k < n; k++) {
        long i = idx[k];
        ok[k] = 1;
        if (padding == LW_GS_ZEROS) {
            ok[k] = i >= 0 && i < len;
            if (!ok[k]) i = 0;
        } else if (padding == LW_GS_REFLECTION && (i < 0 || i >= len)) {
            i = (long)lw_gs_reflect((float)i, lo, hi);
        }
        idx[k] = i < 0 ? 0 : (i >= len ? len - 1 : i);
    }
    return n;
}

/* GridSample of R = 1..3 spatial axes: x [N][C][in...], grid [N][P][R] (P output points per image; the
 * grid's component 0 addresses the last axis), y [N][C][P]. Each output point gathers the product of its
 * axes' taps (up to 4 x 4 x 4), computed once for all channels. */
static void lw_grid_sample(int nt, const float *x, const float *grid, float *y, long N, long C, int R,
                           const long *in, long P, int mode, int padding, int align) {
    long plane = 1, stride[3] = {0, 0, 0};
    for (int d = R - 1; d >= 0; d--) { stride[d] = plane; plane *= in[d]; }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * P * C > 16384)
    for (long t = 0; t < N * P; t++) {
        const long n = t / P, p = t % P;
        long idx[3][4] = {{0}}, off[64];
        float w[3][4] = {{0.0f}}, wt[64];
        int ok[3][4] = {{0}}, cnt[3] = {1, 1, 1}, m = 0;
        for (int d = R; d < 3; d++) { w[d][0] = 1.0f; ok[d][0] = 1; } /* absent axes: one tap at 0 */
        for (int d = 0; d < R; d++)
            cnt[d] = lw_gs_axis(grid[t * R + (R - 1 - d)], in[d], mode, padding, align, idx[d], w[d], ok[d]);
        for (int a = 0; a < cnt[0]; a++)
            for (int b = 0; b < cnt[1]; b++)
                for (int c = 0; c < cnt[2]; c++) {
                    if (!(ok[0][a] && ok[1][b] && ok[2][c])) continue;
                    off[m] = idx[0][a] * stride[0] + idx[1][b] * stride[1] + idx[2][c] * stride[2];
                    wt[m++] = w[0][a] * w[1][b] * w[2][c];
                }
        for (long ch = 0; ch < C; ch++) {
            const float *xc = x + (n * C + ch) * plane;
            float acc = 0.0f;
            for (int j = 0; j < m; j++) acc += wt[j] * xc[off[j]];
            y[(n * C + ch) * P + p] = acc;
        }
    }
}

/* AffineGrid: y [N][points][R] = theta[n] ([R][R + 1]) applied to the homogeneous normalised pixel centre
 * (x, y, (z,) 1) of every point of the R = 2 or 3 spatial axes sp (the last axis is x). */
static void lw_affine_grid(int nt, const float *theta, float *y, long N, int R, const long *sp, int align) {
    long P = 1;
    for (int d = 0; d < R; d++) P *= sp[d];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * P > 16384)
    for (long t = 0; t < N * P; t++) {
        const long n = t / P;
        long rem = t % P;
        float h[4];
        h[R] = 1.0f;
        for (int d = R - 1; d >= 0; d--) { /* spatial axis d is homogeneous component R - 1 - d */
            const long i = rem % sp[d], len = sp[d];
            rem /= sp[d];
            double v;
            if (align) v = len == 1 ? -1.0 : (double)i * (2.0 / (double)(len - 1)) - 1.0;
            else v = (2.0 * (double)i + 1.0) / (double)len - 1.0;
            h[R - 1 - d] = (float)v;
        }
        const float *th = theta + n * R * (R + 1);
        for (int j = 0; j < R; j++) {
            float acc = 0.0f;
            for (int k = 0; k <= R; k++) acc += th[j * (R + 1) + k] * h[k];
            y[t * R + j] = acc;
        }
    }
}

/* RoiAlign (Detectron): y [K][C][OH][OW], bin (ph, pw) of box k the average (or max) over its gh x gw
 * bilinear samples of image batch[k] of x [N][C][H][W]. Boxes are [x1, y1, x2, y2] scaled by `scale` (and
 * shifted by half a pixel with half_pixel); sampling_ratio 0 takes ceil(box / bins) samples per bin. A
 * sample more than a pixel outside reads 0, the rest clamp to the edge; max mode takes, per sample, the
 * largest of its four weighted corners. A batch index out of range writes zeros and sets *status. */
static void lw_roi_align(int nt, const float *x, const float *rois, const int64_t *batch, float *y, long K,
                         long N, long C, long H, long W, long OH, long OW, long ratio, float scale,
                         int half_pixel, int use_max, int *status) {
    int bad = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : bad) if (nt > 1 && K * OH * OW * C > 4096)
    for (long t = 0; t < K * OH * OW; t++) {
        const long k = t / (OH * OW), ph = (t / OW) % OH, pw = t % OW;
        float *yb = y + k * C * OH * OW + ph * OW + pw;
        const long b = (long)batch[k];
        for (long ch = 0; ch < C; ch++) yb[ch * OH * OW] = 0.0f;
        if (b < 0 || b >= N) { bad = 1; continue; }
        const float *r = rois + k * 4, off = half_pixel ? 0.5f : 0.0f;
        const float x0 = r[0] * scale - off, y0 = r[1] * scale - off;
        const float x1 = r[2] * scale - off, y1 = r[3] * scale - off;
        float rw = x1 - x0, rh = y1 - y0;
        if (!half_pixel) { rw = rw > 1.0f ? rw : 1.0f; rh = rh > 1.0f ? rh : 1.0f; }
        const float bh = rh / (float)OH, bw = rw / (float)OW;
        const long gh = ratio > 0 ? ratio : (long)ceilf(rh / (float)OH);
        const long gw = ratio > 0 ? ratio : (long)ceilf(rw / (float)OW);
        if (gh <= 0 || gw <= 0) continue;
        const float count = (float)(gh * gw);
        const float *xb = x + b * C * H * W;
        for (long iy = 0; iy < gh; iy++) {
            float sy = y0 + (float)ph * bh + ((float)iy + 0.5f) * bh / (float)gh;
            for (long ix = 0; ix < gw; ix++) {
                float sx = x0 + (float)pw * bw + ((float)ix + 0.5f) * bw / (float)gw;
                const int first = iy == 0 && ix == 0;
                long p[4] = {0, 0, 0, 0};
                float q[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                float yy = sy, xx = sx;
                if (!(yy < -1.0f || yy > (float)H || xx < -1.0f || xx > (float)W)) {
                    yy = yy > 0.0f ? yy : 0.0f;
                    xx = xx > 0.0f ? xx : 0.0f;
                    long ylo = (long)yy, xlo = (long)xx, yhi, xhi;
                    if (ylo >= H - 1) { ylo = yhi = H - 1; yy = (float)ylo; } else yhi = ylo + 1;
                    if (xlo >= W - 1) { xlo = xhi = W - 1; xx = (float)xlo; } else xhi = xlo + 1;
                    const float ly = yy - (float)ylo, lx = xx - (float)xlo, hy = 1.0f - ly, hx = 1.0f - lx;
                    p[0] = ylo * W + xlo; p[1] = ylo * W + xhi; p[2] = yhi * W + xlo; p[3] = yhi * W + xhi;
                    q[0] = hy * hx; q[1] = hy * lx; q[2] = ly * hx; q[3] = ly * lx;
                }
                for (long ch = 0; ch < C; ch++) {
                    const float *xc = xb + ch * H * W;
                    float *o = yb + ch * OH * OW;
                    if (use_max) {
                        float v = q[0] * xc[p[0]], v1 = q[1] * xc[p[1]], v2 = q[2] * xc[p[2]];
                        const float v3 = q[3] * xc[p[3]];
                        v = v1 > v ? v1 : v;
                        v = v2 > v ? v2 : v;
                        v = v3 > v ? v3 : v;
                        *o = first || v > *o ? v : *o;
                    } else {
                        *o += q[0] * xc[p[0]] + q[1] * xc[p[1]] + q[2] * xc[p[2]] + q[3] * xc[p[3]];
                    }
                }
            }
        }
        if (!use_max)
            for (long ch = 0; ch < C; ch++) yb[ch * OH * OW] /= count;
    }
    if (bad) *status = LW_STATUS_INDEX_RANGE;
}
