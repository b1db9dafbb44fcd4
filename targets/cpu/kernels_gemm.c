/* kernels_gemm.c: packed, register-blocked GEMM (cpu target); the convolutions built on it: kernels_conv.c.
 *
 * Operand layouts (the Python packer in targets/cpu/pack.py writes the same ones for constants):
 *   packed A: [ceil(M/LW_MR)][K][LW_MR]  (row panels, zero-padded past M)
 *   packed B: [ceil(N/LW_NR)][K][LW_NR]  (column panels, zero-padded past N)
 *   or A read in place: element (i, k) at a[i * a_rs + k * a_cs] (row-major or transposed activations).
 * The micro-kernel computes an LW_MR x LW_NR tile with LW_MR * LW_NV vector accumulators, one FMA per
 * accumulator per k; its A operand is a broadcast scalar per row and k, so reading it in place through
 * two strides costs the same as reading a packed panel (measured), and a runtime A is not packed at all:
 * that saves a full pass over the activations (about 10% of a transformer linear layer). A partial last
 * row panel read in place re-reads its last row for the missing ones, so no kernel reads past row M.
 * K is blocked by LW_KC so a B micro-panel stays in L1 while A panels stream from L2.
 * Constant weights are cold in a model (read once per inference, from memory): each micro-kernel call
 * prefetches a slice of the B micro-panel read next into L2, one cache line every LW_PF_EVERY k steps. One
 * line per step (the whole next micro-panel during the first two row panels) kept the line fill buffers
 * full and stalled the micro-kernel's own loads: spreading it measured 4-9% faster on the transformer zoo's
 * linear layers with cold weights (1 thread; 6-15% at 2 threads together with lw_gemm's task split).
 * Reduction order over K never depends on the thread count, so results are identical for any thread count.
 */

#define LW_PF_EVERY 4 /* k steps per prefetched cache line (2 and 8 measured slower) */

#define LW_ALIGN64(n) (((n) + 63) & ~(size_t)63)

/* One GEMM of a batch: c = epilogue(a . b). */
typedef struct {
    const float *a;     /* packed A */
    const float *b;     /* packed B */
    float *c;           /* C[M][N], row stride ldc */
    const float *bias;  /* epilogue bias for this GEMM, or NULL */
    const float *res;   /* epilogue residual for this GEMM, or NULL */
} lw_gemm_item;

typedef struct {
    long M, N, K, ldc;
    lw_epilogue epi;
    long a_rs, a_cs; /* A read in place: element (i, k) at a[i * a_rs + k * a_cs]; both 0: packed A */
} lw_gemm_shape;

/* The micro-kernel: tile[R][LW_NR] = A rows [0, R) . B micro-panel, kc steps. A element (i, k) is read at
 * a[i * ars + k * acs] for i < rows; rows [rows, R) re-read row rows - 1 (always in bounds, their results
 * are ignored), so a partial in-place row panel needs no copy. A packed panel (ars 1, acs LW_MR, zero
 * padded) is read through one pointer; an in-place A through one pointer per row (R streams).
 * Steps [0, npf * LW_PF_EVERY) also prefetch one cache line every LW_PF_EVERY steps, npf lines from pf,
 * into L2 (the operand the block reads next, see lw_gemm_block). */
#define LW_UKERNEL_STEPS(LOAD_A, K0, K1, PREFETCH)                                                        \
    for (long k = K0; k < K1; k++) {                                                                      \
        if (PREFETCH && k % LW_PF_EVERY == 0) __builtin_prefetch(pf + 16 * (k / LW_PF_EVERY), 0, 2);      \
        lw_vf bv[LW_NV];                                                                                  \
        _Pragma("GCC unroll 16") for (int v = 0; v < LW_NV; v++)                                          \
            bv[v] = lw_load(b + k * LW_NR + v * LW_VEC);                                                  \
        _Pragma("GCC unroll 16") for (int i = 0; i < R_; i++) {                                           \
            lw_vf ai = lw_splat(LOAD_A);                                                                  \
            _Pragma("GCC unroll 16") for (int v = 0; v < LW_NV; v++) acc[i][v] += ai * bv[v];             \
        }                                                                                                 \
    }
#define LW_UKERNEL_LOOP(LOAD_A)                                                                           \
    LW_UKERNEL_STEPS(LOAD_A, 0, LW_MIN(kc, npf * LW_PF_EVERY), 1)                                         \
    LW_UKERNEL_STEPS(LOAD_A, LW_MIN(kc, npf * LW_PF_EVERY), kc, 0)

#define LW_UKERNEL(R)                                                                                     \
    static void lw_ukernel_##R(long kc, const float *restrict a, long ars, long acs, int rows,           \
                               const float *restrict b, const float *pf, long npf, float *restrict tile) { \
        enum { R_ = R };                                                                                  \
        lw_vf acc[R][LW_NV];                                                                              \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++)                                              \
            _Pragma("GCC unroll 16") for (int v = 0; v < LW_NV; v++) acc[i][v] = (lw_vf){0};              \
        if (ars == 1 && acs == LW_MR && rows >= R) {                                                      \
            LW_UKERNEL_LOOP(a[k * LW_MR + i])                                                             \
        } else {                                                                                          \
            const float *ap[R];                                                                           \
            _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) ap[i] = a + LW_MIN(i, rows - 1) * ars;   \
            if (acs == 1) {                                                                               \
                LW_UKERNEL_LOOP(ap[i][k])                                                                 \
            } else {                                                                                      \
                LW_UKERNEL_LOOP(ap[i][k * acs])                                                           \
            }                                                                                             \
        }                                                                                                 \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++)                                              \
            _Pragma("GCC unroll 16") for (int v = 0; v < LW_NV; v++)                                      \
                lw_store(tile + i * LW_NR + v * LW_VEC, acc[i][v]);                                       \
    }

#define LW_UKERNEL_EXPAND(R) LW_UKERNEL(R)
#define LW_CAT_EXPAND(a, b) a##b
#define LW_CAT(a, b) LW_CAT_EXPAND(a, b)
#define LW_UKERNEL_FULL LW_CAT(lw_ukernel_, LW_MR)

LW_UKERNEL(1)
LW_UKERNEL(2)
LW_UKERNEL(4)
#if LW_MR > 8
LW_UKERNEL(8)
#endif
#if LW_MR != 1 && LW_MR != 2 && LW_MR != 4
LW_UKERNEL_EXPAND(LW_MR)
#endif

/* Compute the first mr rows of a tile with the smallest kernel that covers them: A element (i, k) at
 * a[i * ars + k * acs], rows (>= mr) of them readable (see LW_UKERNEL). */
static inline void lw_ukernel(int mr, long kc, const float *a, long ars, long acs, int rows, const float *b,
                              const float *pf, long npf, float *tile) {
    if (mr == 1) lw_ukernel_1(kc, a, ars, acs, rows, b, pf, npf, tile);
    else if (mr == 2) lw_ukernel_2(kc, a, ars, acs, rows, b, pf, npf, tile);
    else if (mr <= 4) lw_ukernel_4(kc, a, ars, acs, rows, b, pf, npf, tile);
#if LW_MR > 8
    else if (mr <= 8) lw_ukernel_8(kc, a, ars, acs, rows, b, pf, npf, tile);
#endif
    else LW_UKERNEL_FULL(kc, a, ars, acs, rows, b, pf, npf, tile);
}

/* c[mr x nr] = tile (first) or c += tile. */
static inline void lw_tile_merge(float *c, long ldc, const float *tile, int mr, int nr, int first) {
    if (nr == LW_NR) {
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < LW_NV; v++) {
                float *p = c + i * ldc + v * LW_VEC;
                lw_vf t = lw_load(tile + i * LW_NR + v * LW_VEC);
                lw_store(p, first ? t : lw_load(p) + t);
            }
        return;
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = first ? tile[i * LW_NR + j] : c[i * ldc + j] + tile[i * LW_NR + j];
}

/* The last K block of a full-width tile: merge, epilogue and store in one pass over vector registers.
 * Bias and residual column strides are 0 or 1 (scalar per row or a row vector), as the generator emits.
 * The linear layers of a transformer (alpha 1, a bias row vector or none, a row-major residual or none) load
 * the bias once per tile and pick the activation once per tile, not per vector (about 2% of a layer), with
 * the same arithmetic as the general path. */
#define LW_TILE_ROWS(ACT)                                                                                 \
    for (int i = 0; i < mr; i++) {                                                                        \
        float *cr = c + i * ldc;                                                                          \
        const float *rr = r ? r + i * e->res_rs : NULL;                                                   \
        _Pragma("GCC unroll 16") for (int v = 0; v < LW_NV; v++) {                                        \
            lw_vf t = lw_load(tile + i * LW_NR + v * LW_VEC);                                             \
            if (!first) t += lw_load(cr + v * LW_VEC);                                                    \
            t += bv[v];                                                                                   \
            if (rr) t += lw_load(rr + v * LW_VEC);                                                        \
            lw_store(cr + v * LW_VEC, ACT);                                                               \
        }                                                                                                 \
    }
static inline void lw_tile_finish(const lw_epilogue *e, const lw_gemm_item *it, float *c, long ldc,
                                  const float *tile, int mr, long i0, long j0, int first) {
    if (e->alpha == 1.0f && (!it->res || e->res_cs == 1)
        && (!it->bias || (e->bias_rs == 0 && e->bias_cs == 1 && e->bias_scale == 1.0f))) {
        const float *r = it->res ? it->res + i0 * e->res_rs + j0 : NULL;
        lw_vf bv[LW_NV];
        for (int v = 0; v < LW_NV; v++) bv[v] = it->bias ? lw_load(it->bias + j0 + v * LW_VEC) : (lw_vf){0};
        if (!it->bias)
            for (int v = 0; v < LW_NV; v++) bv[v] = -bv[v]; /* -0.0f: x + -0 == x for every x, -0 included */
        if (e->act == LW_ACT_NONE) {
            LW_TILE_ROWS(t)
        } else if (e->act == LW_ACT_GELU) {
            LW_TILE_ROWS(lw_vgelu(t, e->p0))
        } else {
            LW_TILE_ROWS(lw_vactivate(t, e->act, e->p0, e->p1))
        }
        return;
    }
    for (int i = 0; i < mr; i++) {
        const long row = i0 + i;
        const float *b = it->bias ? it->bias + row * e->bias_rs + j0 * e->bias_cs : NULL;
        const float *r = it->res ? it->res + row * e->res_rs + j0 * e->res_cs : NULL;
        float *cr = c + i * ldc;
        for (int v = 0; v < LW_NV; v++) {
            lw_vf t = lw_load(tile + i * LW_NR + v * LW_VEC);
            if (!first) t += lw_load(cr + v * LW_VEC);
            if (e->alpha != 1.0f) t *= lw_splat(e->alpha);
            if (b) t += lw_splat(e->bias_scale) * (e->bias_cs ? lw_load(b + v * LW_VEC) : lw_splat(b[0]));
            if (r) t += e->res_cs ? lw_load(r + v * LW_VEC) : lw_splat(r[0]);
            lw_store(cr + v * LW_VEC, lw_vactivate(t, e->act, e->p0, e->p1));
        }
    }
}

static inline int lw_epilogue_trivial(const lw_epilogue *e, const lw_gemm_item *it) {
    return e->alpha == 1.0f && !it->bias && !it->res && e->act == LW_ACT_NONE;
}

/* One block of one GEMM: row panels [mp0, mp1) x column panels [np0, np1); b_after: the first B micro-panel
 * of the block this thread runs next when that reads another B (prefetched during this block's last one),
 * or NULL. */
static void lw_gemm_block(const lw_gemm_shape *s, const lw_gemm_item *it, long mp0, long mp1, long np0,
                          long np1, const float *b_after) {
    float tile[LW_MR * LW_NR] __attribute__((aligned(64)));
    const long K = s->K;
    const int trivial = lw_epilogue_trivial(&s->epi, it), packed = s->a_rs == 0 && s->a_cs == 0;
    const long ars = packed ? 1 : s->a_rs, acs = packed ? LW_MR : s->a_cs;
    long k0 = 0;
    do {
        long kc = LW_MIN((long)LW_KC, K - k0);
        int first = k0 == 0, last = k0 + kc >= K;
        for (long np = np0; np < np1; np++) {
            long j0 = np * LW_NR;
            int nr = (int)LW_MIN((long)LW_NR, s->N - j0);
            const float *bp = it->b + np * K * LW_NR + k0 * LW_NR;
            /* the B micro-panel this block reads after this one (constant weights stream from memory):
             * prefetched into L2 in equal slices over this one's row panels, one line every LW_PF_EVERY
             * steps (denser prefetches fill the line fill buffers and stall the micro-kernel's loads) */
            const float *bnext = np + 1 < np1 ? bp + K * LW_NR
                                 : k0 + kc < K ? it->b + np0 * K * LW_NR + (k0 + kc) * LW_NR
                                               : b_after;
            const long next_k = np + 1 < np1   ? kc
                                : k0 + kc < K ? LW_MIN((long)LW_KC, K - k0 - kc)
                                              : LW_MIN((long)LW_KC, K);
            const long next_lines = bnext ? next_k * (LW_NR / 16) : 0;
            const long slice = LW_CDIV(next_lines, mp1 - mp0);
            for (long mp = mp0; mp < mp1; mp++) {
                long i0 = mp * LW_MR;
                int mr = (int)LW_MIN((long)LW_MR, s->M - i0);
                float *c = it->c + i0 * s->ldc + j0;
                const float *ap = packed ? it->a + mp * K * LW_MR + k0 * LW_MR : it->a + i0 * ars + k0 * acs;
                /* Prefetch into L2 while computing: on the first column panel, the next packed A panel
                 * (read next: as much as the micro-kernel's spacing covers); otherwise this row panel's slice
                 * of the next B micro-panel. */
                const float *pf = bp;
                long npf = 0;
                if (packed && np == np0 && mp + 1 < mp1) {
                    pf = ap + K * LW_MR;
                    npf = kc * LW_MR / 16;
                } else if (bnext) {
                    pf = bnext + (mp - mp0) * slice * 16;
                    npf = LW_MAX(0L, LW_MIN(slice, next_lines - (mp - mp0) * slice));
                }
                if (kc > 0) {
                    lw_ukernel(mr, kc, ap, ars, acs, packed ? LW_MR : mr, bp, pf, npf, tile);
                } else {
                    memset(tile, 0, sizeof tile);
                }
                if (last && nr == LW_NR) {
                    lw_tile_finish(&s->epi, it, c, s->ldc, tile, mr, i0, j0, first);
                    continue;
                }
                lw_tile_merge(c, s->ldc, tile, mr, nr, first);
                if (last && !trivial)
                    for (int i = 0; i < mr; i++)
                        lw_epilogue_row(&s->epi, c + i * s->ldc, nr, i0 + i, j0, it->bias, it->res);
            }
        }
        k0 += kc;
    } while (k0 < K);
}

typedef struct {
    long mp, np, mb, nb, mt, ntiles;
} lw_gemm_plan;

/* Task t of lw_gemm: (GEMM, column block, row block) in that order of significance. The block also
 * prefetches the first B micro-panel of task t_next (this thread's next one; -1: none) when that reads
 * another B block. */
static void lw_gemm_task(const lw_gemm_shape *s, const lw_gemm_item *items, const lw_gemm_plan *p, long t,
                         long t_next) {
    const long per_item = p->mt * p->ntiles, item = t / per_item, bm = t % per_item % p->mt;
    const long bn = t % per_item / p->mt;
    const float *b_after = NULL;
    if (t_next >= 0) {
        const long item2 = t_next / per_item, bn2 = t_next % per_item / p->mt;
        const float *b2 = items[item2].b + bn2 * p->nb * s->K * LW_NR;
        if (b2 != items[item].b + bn * p->nb * s->K * LW_NR) b_after = b2;
    }
    lw_gemm_block(s, items + item, bm * p->mb, LW_MIN(p->mp, (bm + 1) * p->mb), bn * p->nb,
                  LW_MIN(p->np, (bn + 1) * p->nb), b_after);
}

#define LW_GEMM_CLAIM_STRIDE 8 /* longs between two threads' task counters: one cache line each */

/* A batch of GEMMs of one shape, parallel over (GEMM, column block, row block) tasks. Thread j owns the
 * contiguous range [tasks * j / nt, tasks * (j + 1) / nt), so with 2 threads each core streams its own half
 * of the weights (the column blocks) instead of both reading every block (3-7% faster than a dynamic
 * schedule on the transformer zoo's layers) and a block knows which B it reads next. Tasks are claimed
 * through one atomic counter per range, and a thread that finishes its own range takes the unclaimed tasks
 * of threads that have not started at all: one the OS runs late (other processes on the cores) does not
 * hold the GEMM up by its whole share. Ranges already under way are left alone: with a few large tasks per
 * thread, taking the last one of a thread a few microseconds behind would leave it idle while the thief
 * runs one task more than its share. */
static void lw_gemm(int nt, const lw_gemm_shape *s, const lw_gemm_item *items, long count) {
    lw_gemm_plan p;
    p.mp = LW_CDIV(s->M, LW_MR);
    p.np = LW_CDIV(s->N, LW_NR);
    long mb = LW_MIN(p.mp, (long)LW_MC / LW_MR), nb = LW_MIN(p.np, (long)LW_NC / LW_NR);
    while (count * LW_CDIV(p.mp, mb) * LW_CDIV(p.np, nb) < 2L * nt && (mb > 1 || nb > 1)) {
        if (nb >= mb * LW_MR / LW_NR && nb > 1) nb = LW_CDIV(nb, 2);
        else mb = LW_CDIV(mb, 2);
    }
    /* Same block count, blocks of equal size: 25 row panels as 24 + 1 left one thread with almost all the
     * work (M = 197 tokens, ViT), 13 + 12 does not. */
    p.mb = LW_CDIV(p.mp, LW_CDIV(p.mp, mb));
    p.nb = LW_CDIV(p.np, LW_CDIV(p.np, nb));
    p.mt = LW_CDIV(p.mp, p.mb);
    p.ntiles = LW_CDIV(p.np, p.nb);
    const long tasks = count * p.mt * p.ntiles;
    const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K * (double)count;
    /* Small problems run without an OpenMP region at all: one whose if clause fails still costs ~0.2 us,
     * a tenth of a small MLP's whole inference. */
    const int parallel = nt > 1 && tasks > 1 && flops > 2e5;
    if (!parallel) {
        for (long t = 0; t < tasks; t++) lw_gemm_task(s, items, &p, t, t + 1 < tasks ? t + 1 : -1);
        return;
    }
    /* per range: the next unclaimed task, whether its owner has started */
    long claim[nt * LW_GEMM_CLAIM_STRIDE] __attribute__((aligned(64)));
    for (long j = 0; j < nt; j++) {
        claim[j * LW_GEMM_CLAIM_STRIDE] = tasks * j / nt;
        claim[j * LW_GEMM_CLAIM_STRIDE + 1] = 0;
    }
#pragma omp parallel num_threads(nt)
    {
        const long id = omp_get_thread_num();
        __atomic_store_n(claim + id * LW_GEMM_CLAIM_STRIDE + 1, 1L, __ATOMIC_RELAXED);
        for (long q = 0; q < nt; q++) { /* own range first, then the ranges of threads that never started */
            const long j = (id + q) % nt, hi = tasks * (j + 1) / nt;
            long *next = claim + j * LW_GEMM_CLAIM_STRIDE;
            while (q == 0 || !__atomic_load_n(next + 1, __ATOMIC_RELAXED)) {
                const long t = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
                if (t >= hi) break;
                lw_gemm_task(s, items, &p, t, t + 1 < hi ? t + 1 : -1);
            }
        }
    }
}

/* Pack count matrices src + m * src_stride (element (i, k) at i * rs + k * cs) into packed A panels. */
static void lw_pack_a(int nt, const float *src, long src_stride, long count, long rs, long cs, long M, long K,
                      float *dst) {
    const long panels = LW_CDIV(M, LW_MR), size = panels * LW_MR * K;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && count * M * K > 65536)
    for (long t = 0; t < count * panels; t++) {
        long m = t / panels, p = t % panels, i0 = p * LW_MR;
        int mr = (int)LW_MIN((long)LW_MR, M - i0);
        const float *s = src + m * src_stride + i0 * rs;
        float *d = dst + m * size + p * LW_MR * K;
        for (long k = 0; k < K; k++) {
            for (int i = 0; i < mr; i++) d[k * LW_MR + i] = s[i * rs + k * cs];
            for (int i = mr; i < LW_MR; i++) d[k * LW_MR + i] = 0.0f;
        }
    }
}

/* Pack count matrices src + m * src_stride (element (k, j) at k * rs + j * cs) into packed B panels. */
static void lw_pack_b(int nt, const float *src, long src_stride, long count, long rs, long cs, long K, long N,
                      float *dst) {
    const long panels = LW_CDIV(N, LW_NR), size = panels * LW_NR * K;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && count * N * K > 65536)
    for (long t = 0; t < count * panels; t++) {
        long m = t / panels, p = t % panels, j0 = p * LW_NR;
        int nr = (int)LW_MIN((long)LW_NR, N - j0);
        const float *s = src + m * src_stride + j0 * cs;
        float *d = dst + m * size + p * LW_NR * K;
        for (long k = 0; k < K; k++) {
            if (cs == 1) memcpy(d + k * LW_NR, s + k * rs, (size_t)nr * sizeof(float));
            else for (int j = 0; j < nr; j++) d[k * LW_NR + j] = s[k * rs + j * cs];
            for (int j = nr; j < LW_NR; j++) d[k * LW_NR + j] = 0.0f;
        }
    }
}

