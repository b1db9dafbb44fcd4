/* kernels_rnn.c: the recurrent ops RNN, GRU and LSTM (cpu target; lowering in emit_rnn.py, semantics in
 * lowering/reference/ops_rnn.py).
 *
 * One kernel runs the three, on the packed GEMM of kernels_gemm.c. Per direction: the input product
 * X W^T + Wb of every time step is hoisted out of the recurrence (one GEMM over all T*B rows of X, read
 * in place); then each step is one GEMM of the states H [B][H] (read in place) with R^T + Rb, and the
 * gate arithmetic per batch entry. GRU takes two GEMMs per step: z and r from H, then the candidate's
 * from r * H (or, linear_before_reset, from H itself). The batch entries advance in lockstep; an entry
 * past its sequence length keeps its state (its GEMM rows are computed and ignored), and the reverse
 * direction of an entry starts at its own last valid step. W^T and R^T are packed B operands: prepacked
 * in the weights blob when constant, packed into the workspace at run time otherwise. When the hoisted
 * products would take too much workspace (emit_rnn.HOIST_BYTES), each step gathers its B input rows and
 * runs their GEMM instead.
 *
 * Gate order (ONNX): RNN i; GRU z r h; LSTM i o f c; peepholes i o f. Activation codes: ACTIVATIONS in
 * ops_rnn.py. The layout flag chooses [seq, batch, ...] (0) or [batch, seq, ...] (1) addressing of X, Y and
 * the states.
 */

typedef struct {
    int kind; /* 0 RNN, 1 GRU, 2 LSTM */
    long T, B, I, H, D, G;
    int layout, reverse_only, linear_before_reset, input_forget, has_clip;
    int hoist; /* 1: X W^T + Wb of all steps first (T*B*G*H floats); 0: per step */
    float clip;
    int act[2][3];
    float alpha[2][3], beta[2][3];
} lw_rnn_geom;

static inline float lw_rnn_act(int code, float x, float a, float b) {
    switch (code) {
    case 0: return lw_sigmoid(x);
    case 1: return lw_tanhf(x);
    case 2: return x > 0.0f ? x : 0.0f;
    case 3: return a * x + b;
    case 4: return x >= 0.0f ? x : a * x;
    case 5: return x > a ? x : 0.0f;
    case 6: return a * lw_tanhf(b * x);
    case 7: return lw_clip(a * x + b, 0.0f, 1.0f);
    case 8: return x >= 0.0f ? x : a * expm1f(x);
    case 9: return x / (1.0f + fabsf(x));
    default: return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x)); /* 10: softplus */
    }
}

/* Activation ``slot`` of direction ``d`` on x, clipped first when the node has a clip. */
static inline float lw_rnn_apply(const lw_rnn_geom *g, int d, int slot, float x) {
    if (g->has_clip) x = lw_clip(x, -g->clip, g->clip);
    return lw_rnn_act(g->act[d][slot], x, g->alpha[d][slot], g->beta[d][slot]);
}

/* c[M][N] (row stride ldc) = a[M][K] (rows at stride lda, read in place) . packed b + bias (NULL: none). */
static void lw_rnn_gemm(int nt, const float *a, long lda, const float *bpk, const float *bias, float *c,
                        long ldc, long M, long N, long K) {
    const lw_gemm_shape s = {M, N, K, ldc, {1.0f, 1.0f, 0, 1, 0, 0, 0, 0.0f, 0.0f}, lda, 1};
    const lw_gemm_item it = {a, bpk, c, bias, NULL};
    lw_gemm(nt, &s, &it, 1);
}

/* Floats of a packed B operand [K][N]. */
#define LW_RNN_PACKED(K, N) (LW_CDIV((N), LW_NR) * LW_NR * (K))

/* The whole node. x: [T][B][I] (layout 1: [B][T][I]); w: [D][G*H][I]; r: [D][G*H][H]; wpk, rpk, rhpk:
 * per direction, the packed W^T, R^T (GRU: of its z and r rows) and GRU's candidate R_h^T, back to back,
 * or NULL (packed here from w and r); b: [D][2*G*H] or NULL; lens: [B] int32 or NULL; h0, c0: [D][B][H]
 * (layout 1: [B][D][H]) or NULL; p: [D][3*H] or NULL. y ([T][D][B][H], layout 1: [B][T][D][H]), yh and yc
 * ([D][B][H], layout 1: [B][D][H]) may be NULL. A sequence length outside [0, T] sets *status (nothing is
 * written). The workspace (emit_rnn.rnn_workspace computes its size): xw (hoist: [T*B][G*H], else
 * [B][G*H]), xa (!hoist: [B][I]), h, c [B][H], gates [B][G*H], tmp, hh [B][H], then the run-time packed
 * W^T, R^T, R_h^T of one direction. */
static void lw_rnn(int nt, const lw_rnn_geom *g, const float *x, const float *w, const float *r,
                   const float *wpk, const float *rpk, const float *rhpk, const float *b, const int32_t *lens,
                   const float *h0, const float *c0, const float *p, float *y, float *yh, float *yc, float *ws,
                   int *status) {
    const long T = g->T, B = g->B, I = g->I, H = g->H, D = g->D, GH = g->G * g->H;
    const int gru = g->kind == 1;
    const long GR = gru ? 2 * H : GH; /* gates computed from H by the first GEMM */
    if (lens)
        for (long bi = 0; bi < B; bi++)
            if (lens[bi] < 0 || lens[bi] > T) { *status = LW_STATUS_OPERAND; return; }
    float *xw = ws;
    float *xa = xw + (g->hoist ? T * B * GH : B * GH); /* !hoist: this step's X rows, [B][I] */
    float *h = xa + (g->hoist ? 0 : B * I), *c = h + B * H, *gates = c + B * H, *tmp = gates + B * GH;
    float *hh = tmp + B * H, *packs = hh + B * H;
    const long wsize = LW_RNN_PACKED(I, GH), rsize = LW_RNN_PACKED(H, GR), rhsize = LW_RNN_PACKED(H, H);
    float *wbuf = packs, *rbuf = wbuf + (wpk ? 0 : wsize), *rhbuf = rbuf + (rpk ? 0 : rsize);
    if (!g->hoist) memset(xa, 0, (size_t)(B * I) * sizeof(float));
    if (y && lens) memset(y, 0, (size_t)(T * D * B * H) * sizeof(float));
    /* element offsets of (t, b) rows of X, of (t, d, b) rows of Y, of (d, b) rows of the states */
#define LW_RNN_X(t, bi) (g->layout ? ((bi) * T + (t)) * I : ((t) * B + (bi)) * I)
#define LW_RNN_Y(t, d, bi) (g->layout ? (((bi) * T + (t)) * D + (d)) * H : (((t) * D + (d)) * B + (bi)) * H)
#define LW_RNN_S(d, bi) (g->layout ? ((bi) * D + (d)) * H : ((d) * B + (bi)) * H)
    long maxlen = 0;
    for (long bi = 0; bi < B; bi++) maxlen = LW_MAX(maxlen, lens ? (long)lens[bi] : T);
    for (int d = 0; d < (int)D; d++) {
        const float *wb = b ? b + d * 2 * GH : NULL, *rb = b ? b + d * 2 * GH + GH : NULL;
        const float *pd = p ? p + d * 3 * H : NULL;
        const int backwards = d == 1 || g->reverse_only;
        const float *wp = wpk ? wpk + d * wsize : wbuf, *rp = rpk ? rpk + d * rsize : rbuf;
        const float *rhp = rhpk ? rhpk + d * rhsize : rhbuf;
        if (!wpk) lw_pack_b(nt, w + d * GH * I, 0, 1, 1, I, I, GH, wbuf);
        if (!rpk) {
            lw_pack_b(nt, r + d * GH * H, 0, 1, 1, H, H, GR, rbuf);
            if (gru) lw_pack_b(nt, r + d * GH * H + 2 * H * H, 0, 1, 1, H, H, H, rhbuf);
        }
        if (g->hoist) lw_rnn_gemm(nt, x, I, wp, wb, xw, GH, T * B, GH, I); /* rows in X's row order */
        for (long bi = 0; bi < B; bi++)
            for (long j = 0; j < H; j++) {
                h[bi * H + j] = h0 ? h0[LW_RNN_S(d, bi) + j] : 0.0f;
                c[bi * H + j] = c0 ? c0[LW_RNN_S(d, bi) + j] : 0.0f;
            }
        for (long s = 0; s < maxlen; s++) {
            /* the time step each entry is at, -1 once it is past its length */
            long tb[B > 0 ? B : 1];
            for (long bi = 0; bi < B; bi++) {
                const long len = lens ? (long)lens[bi] : T;
                tb[bi] = s >= len ? -1 : backwards ? len - 1 - s : s;
            }
            if (!g->hoist) {
                for (long bi = 0; bi < B; bi++)
                    if (tb[bi] >= 0) memcpy(xa + bi * I, x + LW_RNN_X(tb[bi], bi), (size_t)I * sizeof(float));
                lw_rnn_gemm(nt, xa, I, wp, wb, xw, GH, B, GH, I);
            }
            lw_rnn_gemm(nt, h, H, rp, rb, gates, GH, B, GR, H);
            if (gru && g->linear_before_reset) lw_rnn_gemm(nt, h, H, rhp, rb ? rb + 2 * H : NULL, hh, H, B, H, H);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * GH > 16384)
            for (long bi = 0; bi < B; bi++) {
                if (tb[bi] < 0) continue;
                const float *xt = xw + (g->hoist ? LW_RNN_X(tb[bi], bi) / I : bi) * GH;
                float *gt = gates + bi * GH, *hb = h + bi * H, *cb = c + bi * H;
                if (g->kind == 0) {
                    for (long j = 0; j < H; j++) hb[j] = lw_rnn_apply(g, d, 0, xt[j] + gt[j]);
                } else if (gru) {
                    for (long j = 0; j < 2 * H; j++) gt[j] = lw_rnn_apply(g, d, 0, xt[j] + gt[j]);
                    if (!g->linear_before_reset)
                        for (long j = 0; j < H; j++) tmp[bi * H + j] = gt[H + j] * hb[j];
                } else {
                    for (long j = 0; j < H; j++) {
                        const float cp = cb[j];
                        float ig = lw_rnn_apply(g, d, 0, xt[j] + gt[j] + (pd ? pd[j] * cp : 0.0f));
                        float fg = g->input_forget ? 1.0f - ig
                                   : lw_rnn_apply(g, d, 0, xt[2 * H + j] + gt[2 * H + j] +
                                                               (pd ? pd[2 * H + j] * cp : 0.0f));
                        float cand = lw_rnn_apply(g, d, 1, xt[3 * H + j] + gt[3 * H + j]);
                        float cn = fg * cp + ig * cand;
                        float og = lw_rnn_apply(g, d, 0, xt[H + j] + gt[H + j] + (pd ? pd[H + j] * cn : 0.0f));
                        cb[j] = cn;
                        hb[j] = og * lw_rnn_act(g->act[d][2], cn, g->alpha[d][2], g->beta[d][2]);
                    }
                }
            }
            if (gru) {
                if (!g->linear_before_reset) lw_rnn_gemm(nt, tmp, H, rhp, rb ? rb + 2 * H : NULL, hh, H, B, H, H);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * GH > 16384)
                for (long bi = 0; bi < B; bi++) {
                    if (tb[bi] < 0) continue;
                    const float *xt = xw + (g->hoist ? LW_RNN_X(tb[bi], bi) / I : bi) * GH;
                    const float *gt = gates + bi * GH, *hc = hh + bi * H;
                    float *hb = h + bi * H;
                    for (long j = 0; j < H; j++) {
                        const float z = gt[j];
                        const float pre = xt[2 * H + j] + (g->linear_before_reset ? gt[H + j] * hc[j] : hc[j]);
                        hb[j] = (1.0f - z) * lw_rnn_apply(g, d, 1, pre) + z * hb[j];
                    }
                }
            }
            if (y)
                for (long bi = 0; bi < B; bi++)
                    if (tb[bi] >= 0) memcpy(y + LW_RNN_Y(tb[bi], d, bi), h + bi * H, (size_t)H * sizeof(float));
        }
        for (long bi = 0; bi < B; bi++) {
            if (lens && lens[bi] == 0) { /* as ONNX Runtime: an empty sequence ends with zero states */
                memset(h + bi * H, 0, (size_t)H * sizeof(float));
                memset(c + bi * H, 0, (size_t)H * sizeof(float));
            }
            if (yh) memcpy(yh + LW_RNN_S(d, bi), h + bi * H, (size_t)H * sizeof(float));
            if (yc) memcpy(yc + LW_RNN_S(d, bi), c + bi * H, (size_t)H * sizeof(float));
        }
    }
#undef LW_RNN_X
#undef LW_RNN_Y
#undef LW_RNN_S
}
