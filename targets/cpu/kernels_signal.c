/* kernels_signal.c: DFT, STFT, the window ops and MelWeightMatrix (cpu target; lowering in emit_signal.py,
 * semantics in lowering/reference/ops_signal.py).
 *
 * The transforms are direct O(n^2) DFTs: every sum accumulates in double with twiddles from a double table
 * of the n roots of unity (index k*j mod n, so each twiddle is exact to double precision whatever k*j),
 * which keeps the float32 results within an ulp of numpy's float64 FFT (the ONNX expected outputs allow
 * 1e-7 absolute error, so float accumulation would not do). The lines of a transform run in parallel.
 * Run-time parameters (axis, dft_length, frame_step, frame_length, window size) are checked against the
 * compiled shapes; a contradiction sets *status to LW_STATUS_OPERAND and writes nothing.
 */

/* tw[m] = exp(-2 pi i m / n), interleaved (re, im); the quarter points are exact. */
static void lw_dft_twiddles(double *tw, long n) {
    for (long m = 0; m < n; m++) {
        double re, im;
        if (4 * m == n) { re = 0.0; im = -1.0; }
        else if (2 * m == n) { re = -1.0; im = 0.0; }
        else if (4 * m == 3 * n) { re = 0.0; im = 1.0; }
        else {
            double a = 6.283185307179586476925286766559 * (double)m / (double)n;
            re = cos(a);
            im = -sin(a);
        }
        tw[2 * m] = re;
        tw[2 * m + 1] = im;
    }
}

/* One complex DFT line: y[k] = scale * sum_j x[j] w[j] e^(-+2 pi i k j / n), k < m. x has len samples of
 * cin floats (1: real) at stride xs floats, read up to min(len, n) (zero beyond); win (may be NULL) has
 * n weights; y holds m (re, im) pairs at stride ys floats. */
static void lw_dft_line(const float *x, long xs, int cin, long len, const float *win, long n,
                        const double *tw, int inverse, float *y, long ys, long m) {
    const long used = len < n ? len : n;
    const double scale = inverse ? 1.0 / (double)n : 1.0, sign = inverse ? -1.0 : 1.0;
    for (long k = 0; k < m; k++) {
        double re = 0.0, im = 0.0;
        long idx = 0;
        const long step = k % n;
        for (long j = 0; j < used; j++) {
            double a = x[j * xs], b = cin == 2 ? x[j * xs + 1] : 0.0;
            if (win) { a *= win[j]; b *= win[j]; }
            const double c = tw[2 * idx], s = sign * tw[2 * idx + 1];
            re += a * c - b * s;
            im += a * s + b * c;
            idx += step;
            if (idx >= n) idx -= n;
        }
        y[k * ys] = (float)(re * scale);
        y[k * ys + 1] = (float)(im * scale);
    }
}

/* One inverse real line (irfft): y[j] = (1/n) sum over the Hermitian extension of the len one-sided bins
 * (zero beyond), j < n. The imaginary parts of bin 0 and (n even) bin n/2 are ignored, as numpy does. */
static void lw_irfft_line(const float *x, long xs, int cin, long len, long n, const double *tw, float *y,
                          long ys) {
    const long half = n / 2, used = len < half + 1 ? len : half + 1;
    for (long j = 0; j < n; j++) {
        double acc = used > 0 ? x[0] : 0.0;
        long idx = j % n;
        const long step = idx;
        for (long k = 1; k < used; k++) {
            double a = x[k * xs], b = cin == 2 ? x[k * xs + 1] : 0.0;
            if (2 * k == n) {
                acc += (j & 1) ? -a : a;
            } else {
                acc += 2.0 * (a * tw[2 * idx] + b * tw[2 * idx + 1]); /* Re((a + ib) e^(+i t)) */
            }
            idx += step;
            if (idx >= n) idx -= n;
        }
        y[j * ys] = (float)(acc / (double)n);
    }
}

/* DFT of x (rank dims, the last 1 or 2) along axis with length n. oshape: the compiled output shape, which
 * the run-time axis and n must give. ws: 2 * n doubles. */
static void lw_dft(int nt, const float *x, float *y, const long *ishape, const long *oshape, int rank,
                   long axis, long n, int inverse, int onesided, long max_n, double *ws, int *status) {
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank - 1 || n < 1 || n > max_n) { *status = LW_STATUS_OPERAND; return; }
    const int irfft = inverse && onesided;
    const long m = irfft || !onesided ? n : n / 2 + 1;
    for (int d = 0; d < rank; d++) {
        long want = d == axis ? m : d == rank - 1 ? (irfft ? 1 : 2) : ishape[d];
        if (oshape[d] != want) { *status = LW_STATUS_OPERAND; return; }
    }
    long outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= ishape[d];
    for (int d = axis + 1; d < rank - 1; d++) inner *= ishape[d];
    const int cin = (int)ishape[rank - 1], cout = irfft ? 1 : 2;
    const long len = ishape[axis];
    lw_dft_twiddles(ws, n);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * inner * m * len > 16384)
    for (long line = 0; line < outer * inner; line++) {
        const long o = line / inner, i = line % inner;
        const float *xl = x + (o * len * inner + i) * cin;
        float *yl = y + (o * m * inner + i) * cout;
        if (irfft)
            lw_irfft_line(xl, inner * cin, cin, len, n, ws, yl, inner * cout);
        else
            lw_dft_line(xl, inner * cin, cin, len, NULL, n, ws, inverse, yl, inner * cout, m);
    }
}

/* STFT of x [B][L][cin] into y [B][frames][bins][2]: frame f is x[f * step ...] times the window (NULL:
 * ones), zero past L, transformed with length fl; bins = fl / 2 + 1 when onesided, else fl. */
static void lw_stft(int nt, const float *x, const float *win, float *y, long B, long L, int cin, long step,
                    long fl, int onesided, long frames, long bins, long max_n, double *ws, int *status) {
    if (step < 1 || fl < 1 || fl > L || fl > max_n || 1 + (L - fl) / step != frames ||
        (onesided ? fl / 2 + 1 : fl) != bins) {
        *status = LW_STATUS_OPERAND;
        return;
    }
    lw_dft_twiddles(ws, fl);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B * frames * bins * fl > 16384)
    for (long line = 0; line < B * frames; line++) {
        const long b = line / frames, f = line % frames;
        const long start = f * step, len = L - start;
        lw_dft_line(x + (b * L + start) * cin, cin, cin, len, win, fl, ws, 0, y + line * bins * 2, 2, bins);
    }
}

/* Hann (kind 0), Hamming (1) or Blackman (2) window of n points; periodic: denominator n, else n - 1. */
static void lw_window(float *y, long size, long n, int kind, int periodic, int *status) {
    if (size != n) { *status = LW_STATUS_OPERAND; return; }
    const double den = periodic ? (double)n : (double)(n - 1), pi = 3.141592653589793238462643383279;
    for (long i = 0; i < n; i++) {
        double v;
        if (kind == 0) {
            double s = sin(pi * (double)i / den);
            v = s * s;
        } else if (kind == 1) {
            v = 25.0 / 46.0 - (21.0 / 46.0) * cos(2.0 * pi * (double)i / den);
        } else {
            v = 0.42 - 0.5 * cos(2.0 * pi * (double)i / den) + 0.08 * cos(4.0 * pi * (double)i / den);
        }
        y[i] = (float)v;
    }
}

/* MelWeightMatrix [dft_length / 2 + 1][mel_bins] (the triangles of ONNX's definition, the band edges in
 * float32 then double as the reference computes them); edges: mel_bins + 2 longs of scratch. */
static void lw_mel_weights(float *y, long mel_bins, long dft_length, long sample_rate, float lower, float upper,
                           long rows, long cols, long *edges, int *status) {
    if (mel_bins != cols || dft_length < 0 || dft_length / 2 + 1 != rows || sample_rate <= 0) {
        *status = LW_STATUS_OPERAND;
        return;
    }
    const double ln10 = 2.302585092994045684017991454684;
    const double low = (double)(2595.0f * log1pf(lower / 700.0f)) / ln10;
    const double high = (double)(2595.0f * log1pf(upper / 700.0f)) / ln10;
    const double mel_step = (high - low) / (double)(mel_bins + 2);
    for (long i = 0; i < mel_bins + 2; i++) {
        double hz = 700.0 * expm1(((double)i * mel_step + low) / 2595.0 * ln10);
        /* floor(a / b): numpy's floor division (a - fmod(a, b)) / b only differs when a / b rounds up
         * to an integer; gcc 12 -O3 vectorizes that fmod form wrongly (measured) */
        double bin = floor((double)(dft_length + 1) * hz / (double)sample_rate);
        edges[i] = (long)bin;
    }
    memset(y, 0, (size_t)(rows * cols) * sizeof(float));
    for (long i = 0; i < mel_bins; i++) {
        const long lo = edges[i], mid = edges[i + 1], hi = edges[i + 2];
        if (lo < 0 || mid < 0 || mid >= rows || hi > rows) { *status = LW_STATUS_OPERAND; return; }
        if (mid == lo) {
            y[mid * cols + i] = 1.0f;
        } else {
            for (long j = lo; j <= mid; j++) y[j * cols + i] = (float)((double)(j - lo) / (double)(mid - lo));
        }
        for (long j = mid; j < hi; j++) y[j * cols + i] = (float)((double)(hi - j) / (double)(hi - mid));
    }
}
