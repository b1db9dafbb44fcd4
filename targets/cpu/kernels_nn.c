/* kernels_nn.c: ConvTranspose, Col2Im, LRN, MaxUnpool, ReverseSequence, Det and training-mode
 * BatchNormalization (cpu target; emitters in emit_nn.py).
 *
 * Spatial ops take up to 3 spatial axes; the emitter lifts 1-D and 2-D ones to 3-D with leading axes of
 * size 1, so one loop nest serves every rank.
 */

/* Add the columns of one plane into its image: cols is [blk0 * blk1 * blk2][nb0 * nb1 * nb2] (a value per
 * block tap and block), block (i0, i1, i2) tap (a, b, c) lands at image position i * s + tap * d - pb along
 * each axis (positions outside the image are dropped). yp is accumulated into, not cleared. */
static void lw_col2im_plane(const float *cols, float *yp, const long img[3], const long blk[3],
                            const long nb[3], const long s[3], const long d[3], const long pb[3]) {
    const long L = nb[0] * nb[1] * nb[2];
    for (long a = 0; a < blk[0]; a++)
        for (long b = 0; b < blk[1]; b++)
            for (long c = 0; c < blk[2]; c++) {
                const float *xr = cols + ((a * blk[1] + b) * blk[2] + c) * L;
                const long off0 = a * d[0] - pb[0], off1 = b * d[1] - pb[1], off2 = c * d[2] - pb[2];
                long lo0, hi0, lo1, hi1, lo2, hi2;
                lw_axis_span(off0, s[0], nb[0], img[0], &lo0, &hi0);
                lw_axis_span(off1, s[1], nb[1], img[1], &lo1, &hi1);
                lw_axis_span(off2, s[2], nb[2], img[2], &lo2, &hi2);
                for (long i0 = lo0; i0 < hi0; i0++)
                    for (long i1 = lo1; i1 < hi1; i1++) {
                        float *yr = yp + ((i0 * s[0] + off0) * img[1] + i1 * s[1] + off1) * img[2] + off2;
                        const float *xb = xr + (i0 * nb[1] + i1) * nb[2];
                        if (s[2] == 1)
                            for (long i2 = lo2; i2 < hi2; i2++) yr[i2] += xb[i2];
                        else
                            for (long i2 = lo2; i2 < hi2; i2++) yr[i2 * s[2]] += xb[i2];
                    }
            }
}

/* ConvTranspose geometry: N images of C input channels and M output channels in G groups (W is
 * [C][M / G][k0][k1][k2]); output position i * s + k * d - pb along each axis. */
typedef struct {
    long N, C, M, G;
    long in[3], out[3], k[3], s[3], d[3], pb[3];
} lw_convt_geom;

/* ConvTranspose as a direct loop nest (when lw_conv_transpose's column buffer would be too large), one
 * output plane (image, output channel) per task so no two threads write one element: the plane starts at
 * the bias, then each input channel of the group adds every kernel tap's weight times its input rows,
 * scattered with the stride (the inner loop runs along an input row). */
static void lw_conv_transpose_direct(int nt, const lw_convt_geom *g, const float *x, const float *w,
                                     const float *b, float *y) {
    const long Cg = g->C / g->G, Mg = g->M / g->G;
    const long K = g->k[0] * g->k[1] * g->k[2];
    const long IP = g->in[0] * g->in[1] * g->in[2], OP = g->out[0] * g->out[1] * g->out[2];
    const long planes = g->N * g->M, work = planes * IP * Cg * K;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes > 1 && work > 65536)
    for (long t = 0; t < planes; t++) {
        const long n = t / g->M, oc = t % g->M, grp = oc / Mg, m = oc % Mg;
        float *yp = y + t * OP;
        const float init = b ? b[oc] : 0.0f;
        for (long i = 0; i < OP; i++) yp[i] = init;
        for (long c = 0; c < Cg; c++) {
            const long ic = grp * Cg + c;
            const float *xp = x + (n * g->C + ic) * IP;
            const float *wp = w + (ic * Mg + m) * K;
            for (long a = 0; a < g->k[0]; a++) {
                long lo0, hi0;
                const long off0 = a * g->d[0] - g->pb[0];
                lw_axis_span(off0, g->s[0], g->in[0], g->out[0], &lo0, &hi0);
                for (long bb = 0; bb < g->k[1]; bb++) {
                    long lo1, hi1;
                    const long off1 = bb * g->d[1] - g->pb[1];
                    lw_axis_span(off1, g->s[1], g->in[1], g->out[1], &lo1, &hi1);
                    for (long cc = 0; cc < g->k[2]; cc++) {
                        long lo2, hi2;
                        const long off2 = cc * g->d[2] - g->pb[2];
                        lw_axis_span(off2, g->s[2], g->in[2], g->out[2], &lo2, &hi2);
                        const float wv = wp[(a * g->k[1] + bb) * g->k[2] + cc];
                        const long s2 = g->s[2];
                        for (long i0 = lo0; i0 < hi0; i0++)
                            for (long i1 = lo1; i1 < hi1; i1++) {
                                const float *xr = xp + (i0 * g->in[1] + i1) * g->in[2];
                                const long o0 = i0 * g->s[0] + off0, o1 = i1 * g->s[1] + off1;
                                float *yr = yp + (o0 * g->out[1] + o1) * g->out[2] + off2;
                                if (s2 == 1)
                                    for (long i2 = lo2; i2 < hi2; i2++) yr[i2] += wv * xr[i2];
                                else
                                    for (long i2 = lo2; i2 < hi2; i2++) yr[i2 * s2] += wv * xr[i2];
                            }
                    }
                }
            }
        }
    }
}

/* Workspace floats of lw_conv_transpose: one (image, group)'s packed input panels and its columns. */
static inline long lw_conv_transpose_ws(const lw_convt_geom *g) {
    const long Cg = g->C / g->G, Mg = g->M / g->G, K = g->k[0] * g->k[1] * g->k[2];
    const long IP = g->in[0] * g->in[1] * g->in[2];
    return LW_CDIV(LW_CDIV(IP, LW_NR) * LW_NR * Cg, 16) * 16 + Mg * K * IP;
}

/* ConvTranspose as GEMMs, per (image, group): the columns col[Mg * K][IP] = W_g^T . X[n, g] (W read in place
 * as the transposed A operand, the input packed as B), then each output plane starts at its bias and adds
 * its K rows of columns (lw_col2im_plane: the input grid is the block grid), one plane per task. ws holds
 * lw_conv_transpose_ws floats. */
static void lw_conv_transpose(int nt, const lw_convt_geom *g, const float *x, const float *w, const float *b,
                              float *y, float *ws) {
    const long Cg = g->C / g->G, Mg = g->M / g->G, K = g->k[0] * g->k[1] * g->k[2];
    const long IP = g->in[0] * g->in[1] * g->in[2], OP = g->out[0] * g->out[1] * g->out[2], rows = Mg * K;
    float *packed = ws, *col = ws + LW_CDIV(LW_CDIV(IP, LW_NR) * LW_NR * Cg, 16) * 16;
    const lw_epilogue e = {1.0f, 1.0f, 0, 0, 0, 0, LW_ACT_NONE, 0.0f, 0.0f};
    const lw_gemm_shape shape = {rows, IP, Cg, IP, e, 1, rows};
    for (long n = 0; n < g->N; n++)
        for (long grp = 0; grp < g->G; grp++) {
            lw_pack_b(nt, x + (n * g->C + grp * Cg) * IP, 0, 1, IP, 1, Cg, IP, packed);
            const lw_gemm_item item = {w + grp * Cg * rows, packed, col, NULL, NULL};
            lw_gemm(nt, &shape, &item, 1);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && Mg > 1 && rows * IP > 65536)
            for (long m = 0; m < Mg; m++) {
                const long oc = grp * Mg + m;
                float *yp = y + (n * g->M + oc) * OP;
                const float init = b ? b[oc] : 0.0f;
                for (long i = 0; i < OP; i++) yp[i] = init;
                lw_col2im_plane(col + m * K * IP, yp, g->out, g->k, g->in, g->s, g->d, g->pb);
            }
        }
}

/* Col2Im: x is [planes * K][L] (K = blk0 * blk1 * blk2 block taps, L sliding blocks), y is [planes][img]:
 * every column value is added to the image position of its block and tap. The block shape may be a run-time
 * operand: returns nonzero (nothing written) when it does not match x's shape. */
static int lw_col2im(int nt, const float *x, float *y, long planes, long xrows, long L, const long img[3],
                     const long blk[3], const long s[3], const long d[3], const long pb[3],
                     const long pe[3]) {
    long nb[3], K = 1, blocks = 1;
    for (int i = 0; i < 3; i++) {
        if (blk[i] < 1) return 1;
        const long span = img[i] + pb[i] + pe[i] - d[i] * (blk[i] - 1) - 1;
        if (span < 0) return 1;
        nb[i] = span / s[i] + 1;
        K *= blk[i];
        blocks *= nb[i];
    }
    if (planes * K != xrows || blocks != L) return 1;
    const long IP = img[0] * img[1] * img[2];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes > 1 && planes * K * L > 65536)
    for (long t = 0; t < planes; t++) {
        float *yp = y + t * IP;
        for (long i = 0; i < IP; i++) yp[i] = 0.0f;
        lw_col2im_plane(x + t * K * L, yp, img, blk, nb, s, d, pb);
    }
    return 0;
}

/* LRN over x [N][C][P]: y = x / (bias + alpha / size * sum of x^2 over the channels [c - before,
 * c + after])^beta, the sum in double. One (image, position block) per task. */
static void lw_lrn(int nt, const float *x, float *y, long N, long C, long P, long before, long after,
                   float alpha_over_size, float beta, float bias) {
    const long blocks = LW_CDIV(P, 256);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * blocks > 1 && N * C * P > 65536)
    for (long t = 0; t < N * blocks; t++) {
        const long n = t / blocks, p0 = (t % blocks) * 256, p1 = LW_MIN(P, p0 + 256);
        const float *xn = x + n * C * P;
        float *yn = y + n * C * P;
        for (long c = 0; c < C; c++) {
            const long lo = LW_MAX(0, c - before), hi = LW_MIN(C - 1, c + after);
            for (long p = p0; p < p1; p++) {
                double sq = 0.0;
                for (long j = lo; j <= hi; j++) sq += (double)xn[j * P + p] * xn[j * P + p];
                const double v = xn[c * P + p];
                yn[c * P + p] = (float)(v / pow((double)bias + (double)alpha_over_size * sq, (double)beta));
            }
        }
    }
}

/* The determinant of each of the count [n][n] matrices of x: LU with partial pivoting in double (ws holds
 * n * n doubles per matrix). */
static void lw_det(int nt, const float *x, float *y, long count, long n, double *ws) {
    const long work = count * n * n * n;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && count > 1 && work > 65536)
    for (long t = 0; t < count; t++) {
        double *a = ws + t * n * n;
        for (long i = 0; i < n * n; i++) a[i] = x[t * n * n + i];
        double det = 1.0;
        for (long k = 0; k < n; k++) {
            long piv = k;
            for (long i = k + 1; i < n; i++)
                if (fabs(a[i * n + k]) > fabs(a[piv * n + k])) piv = i;
            if (a[piv * n + k] == 0.0) { det = 0.0; break; }
            if (piv != k) {
                for (long j = 0; j < n; j++) {
                    const double tmp = a[k * n + j];
                    a[k * n + j] = a[piv * n + j];
                    a[piv * n + j] = tmp;
                }
                det = -det;
            }
            const double pivot = a[k * n + k];
            det *= pivot;
            for (long i = k + 1; i < n; i++) {
                const double f = a[i * n + k] / pivot;
                for (long j = k + 1; j < n; j++) a[i * n + j] -= f * a[k * n + j];
            }
        }
        y[t] = (float)det;
    }
}

/* MaxUnpool: y (ny elements) is zeroed, then x[j] goes to the flat position idx[j] of the inferred shape
 * (later writes win), mapped into y's shape: rank dims, the inferred extents dims[] and y's strides
 * ystride[]. An index outside the inferred shape sets LW_STATUS_INDEX_RANGE. */
static void lw_max_unpool(const float *x, const int64_t *idx, float *y, long nx, long ny, int rank,
                          const long *dims, const long *ystride, int *status) {
    memset(y, 0, (size_t)ny * sizeof(float));
    long total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    for (long j = 0; j < nx; j++) {
        long rem = (long)idx[j], off = 0;
        if (rem < 0 || rem >= total) { *status = LW_STATUS_INDEX_RANGE; return; }
        for (int i = rank - 1; i >= 0; i--) {
            off += rem % dims[i] * ystride[i];
            rem /= dims[i];
        }
        y[off] = x[j];
    }
}

/* ReverseSequence on x [B][T][chunk bytes] (batch_major) or [T][B][chunk bytes]: the first lens[b] steps of
 * batch item b reversed, the rest copied. A length outside [0, T] sets LW_STATUS_OPERAND. */
static void lw_reverse_sequence(int nt, const void *xv, void *yv, const int64_t *lens, long B, long T,
                                long chunk, int batch_major, int *status) {
    for (long b = 0; b < B; b++)
        if (lens[b] < 0 || lens[b] > T) { *status = LW_STATUS_OPERAND; return; }
    const unsigned char *x = (const unsigned char *)xv;
    unsigned char *y = (unsigned char *)yv;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B * T * chunk > 1048576)
    for (long r = 0; r < B * T; r++) {
        const long b = r / T, t = r % T, src = t < lens[b] ? lens[b] - 1 - t : t;
        const long yo = batch_major ? b * T + t : t * B + b, xo = batch_major ? b * T + src : src * B + b;
        memcpy(y + yo * chunk, x + xo * chunk, (size_t)chunk);
    }
}

/* Training-mode BatchNormalization on x [N][C][P]: per channel the batch mean and biased variance (in
 * double), y = (x - mean) / sqrt(var + eps) * scale + bias, and the running statistics
 * mean * momentum + batch_mean * (1 - momentum) (the same for the variance) when rmean / rvar are given. */
static void lw_batchnorm_train(int nt, const float *x, float *y, long N, long C, long P, const float *scale,
                               const float *bias, const float *mean, const float *var, float eps,
                               float momentum, float *rmean, float *rvar) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && C > 1 && N * C * P > 65536)
    for (long c = 0; c < C; c++) {
        double sum = 0.0, count = (double)(N * P);
        for (long n = 0; n < N; n++)
            for (long p = 0; p < P; p++) sum += x[(n * C + c) * P + p];
        const double mu = sum / count;
        double sq = 0.0;
        for (long n = 0; n < N; n++)
            for (long p = 0; p < P; p++) {
                const double v = x[(n * C + c) * P + p] - mu;
                sq += v * v;
            }
        const double sigma2 = sq / count;
        const double inv = 1.0 / sqrt(sigma2 + (double)eps), s = scale[c], sh = bias[c];
        for (long n = 0; n < N; n++)
            for (long p = 0; p < P; p++) {
                const long i = (n * C + c) * P + p;
                y[i] = (float)((x[i] - mu) * inv * s + sh);
            }
        if (rmean) rmean[c] = (float)(mean[c] * (double)momentum + mu * (1.0 - (double)momentum));
        if (rvar) rvar[c] = (float)(var[c] * (double)momentum + sigma2 * (1.0 - (double)momentum));
    }
}

/* ReduceMax / ReduceMin of a bool tensor (one byte per element, 0 or 1): any / all over the axes of mask,
 * sequential (bool reductions are small), y holding the ny kept positions in order. */
static void lw_reduce_bool(const uint8_t *x, uint8_t *y, int rank, const long *shape, unsigned mask, long ny,
                           int is_max) {
    long ostride[16], idx[16], nx = 1, step = 1;
    for (int d = rank - 1; d >= 0; d--) {
        nx *= shape[d];
        idx[d] = 0;
        if (mask >> d & 1u) ostride[d] = 0;
        else { ostride[d] = step; step *= shape[d]; }
    }
    memset(y, is_max ? 0 : 1, (size_t)ny);
    long o = 0;
    for (long i = 0; i < nx; i++) {
        y[o] = is_max ? (uint8_t)(y[o] | (x[i] != 0)) : (uint8_t)(y[o] & (x[i] != 0));
        for (int d = rank - 1; d >= 0; d--) { /* the odometer: the next position, and its output offset */
            o += ostride[d];
            if (++idx[d] < shape[d]) break;
            o -= ostride[d] * shape[d];
            idx[d] = 0;
        }
    }
}
