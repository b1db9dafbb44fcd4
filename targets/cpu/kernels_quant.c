/* kernels_quant.c: the integer kernels of quantized models (cpu target).
 *
 * They compute the ops of lowering/quantized.py bit for bit (lowering/reference/quantized_ops.py is the
 * executable definition): accumulators are int32 with two's-complement wrap-around (every integer sum here
 * is done in uint32, so it is exact modulo 2^32 whatever the operand sizes), requantisation is
 * ``(t * M + 2^(shift-1)) >> shift`` in int64 (uint64 multiply-add, so wrap-around is defined too, then an
 * arithmetic shift), then the output zero point, the clamp and the optional 256-entry LUT.
 *
 * The int8 GEMM computes u8 x s8 products in groups of 4 along K, the shape of AVX-512 VNNI's vpdpbusd:
 *   packed A (broadcast operand): [ceil(M/LW_QMR)][K4][LW_QMR][4] bytes, K4 = ceil(K/4), zero past M and K
 *   packed B (vector operand):    [ceil(N/LW_QNR)][K4][LW_QNR][4] bytes, zero past N and K
 * One operand is unsigned (activations, +128 when they are int8) and the other signed (weights, -128 when
 * uint8); the zero points, that shift and the weight sums become per-row / per-column int32 corrections
 * added to the accumulator before the wrap (exact: the sums are all modulo 2^32). With LW_VNNI the 4-byte
 * dot product is one vpdpbusd; otherwise it is two exact 16-bit multiply-adds (pmaddwd) per vector, or
 * plain C off x86.
 */

#if !defined(LW_QMR) || !defined(LW_QNR) || !defined(LW_VNNI)
#error "the generator must define LW_QMR, LW_QNR and LW_VNNI"
#endif
#if LW_QNR % LW_VEC != 0
#error "LW_QNR must be a multiple of LW_VEC"
#endif
#if LW_QMR < 4
#error "LW_QMR must be at least 4"
#endif
#if LW_VNNI && LW_VEC != 16
#error "the VNNI int8 GEMM needs 16-lane (AVX-512) vectors"
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define LW_QNV (LW_QNR / LW_VEC)

typedef int32_t lw_vq __attribute__((vector_size(LW_VEC * 4)));
typedef uint32_t lw_vuq __attribute__((vector_size(LW_VEC * 4)));
typedef int16_t lw_vh __attribute__((vector_size(LW_VEC * 4)));
typedef uint16_t lw_vuh __attribute__((vector_size(LW_VEC * 4)));
typedef int64_t lw_vl __attribute__((vector_size(LW_VEC * 8)));
typedef uint64_t lw_vul __attribute__((vector_size(LW_VEC * 8)));
typedef uint8_t lw_vb __attribute__((vector_size(LW_VEC)));

static inline lw_vq lw_qload(const void *p) { lw_vq v; memcpy(&v, p, sizeof v); return v; }
static inline void lw_qstore(void *p, lw_vq v) { memcpy(p, &v, sizeof v); }
static inline lw_vq lw_qadd(lw_vq a, lw_vq b) { return (lw_vq)((lw_vuq)a + (lw_vuq)b); }

/* Per 32-bit lane: a0*b0 + a1*b1 over its two int16 halves (exact, pmaddwd). */
static inline lw_vq lw_madd16(lw_vh a, lw_vh b) {
#if defined(LW_PORTABLE_C) /* force the plain C below (tests build it with CC="gcc -DLW_PORTABLE_C") */
    lw_vq al = (lw_vq)((lw_vuq)a << 16) >> 16, ah = (lw_vq)a >> 16;
    lw_vq bl = (lw_vq)((lw_vuq)b << 16) >> 16, bh = (lw_vq)b >> 16;
    return (lw_vq)((lw_vuq)(al * bl) + (lw_vuq)(ah * bh));
#elif LW_VEC == 16 && defined(__AVX512BW__)
    return (lw_vq)_mm512_madd_epi16((__m512i)a, (__m512i)b);
#elif LW_VEC == 8 && defined(__AVX2__)
    return (lw_vq)_mm256_madd_epi16((__m256i)a, (__m256i)b);
#elif LW_VEC == 4 && defined(__SSE2__)
    return (lw_vq)_mm_madd_epi16((__m128i)a, (__m128i)b);
#else
    lw_vq al = (lw_vq)((lw_vuq)a << 16) >> 16, ah = (lw_vq)a >> 16;
    lw_vq bl = (lw_vq)((lw_vuq)b << 16) >> 16, bh = (lw_vq)b >> 16;
    return (lw_vq)((lw_vuq)(al * bl) + (lw_vuq)(ah * bh));
#endif
}

/* acc + per 32-bit lane the sum of its 4 byte products u[i] * s[i], u unsigned and s signed (vpdpbusd,
 * which wraps like the uint32 sum; the emulation splits even and odd bytes into 16-bit lanes). */
static inline lw_vq lw_dp4(lw_vq acc, lw_vq u, lw_vq s) {
#if LW_VNNI
    return (lw_vq)_mm512_dpbusd_epi32((__m512i)acc, (__m512i)u, (__m512i)s);
#else
    lw_vh ul = (lw_vh)((lw_vuh)u & 0xff), uh = (lw_vh)((lw_vuh)u >> 8);
    lw_vh sl = (lw_vh)((lw_vuh)s << 8) >> 8, sh = (lw_vh)s >> 8;
    return lw_qadd(acc, lw_qadd(lw_madd16(ul, sl), lw_madd16(uh, sh)));
#endif
}

/* --- requantisation ------------------------------------------------------------------------------- */

/* The epilogue of every integer op: t = wrap32(acc) + bias[c]; y = (t * M[c] + R[c]) >> S[c] with
 * R = 2^(S-1); y = clamp(y + zp, lo, hi); y = lut[y - qmin]. Per-channel parameters are int64 arrays
 * prm[0..4) * cpad + c (bias, M, R, S), per-tensor ones are repeated. */
typedef struct {
    const int64_t *prm;
    long cpad;
    int64_t zp, lo, hi;
    const uint8_t *lut;   /* 256 output bytes, or NULL */
    int lut_xor;          /* the byte of y, xor this, is y - qmin: 0x80 for int8 outputs, 0 for uint8 */
} lw_qepi;

static inline int64_t lw_requant1(int64_t t, int64_t m, int64_t r, int64_t s) {
    return (int64_t)((uint64_t)t * (uint64_t)m + (uint64_t)r) >> s;
}

static inline uint8_t lw_qfinish1(const lw_qepi *e, int64_t y) {
    y += e->zp;
    y = y < e->lo ? e->lo : y;
    y = y > e->hi ? e->hi : y;
    return (uint8_t)y;
}

static inline lw_vl lw_vlsel(lw_vl mask, lw_vl a, lw_vl b) { return (a & mask) | (b & ~mask); }

static inline lw_vb lw_qfinish_v(const lw_qepi *e, lw_vq acc, lw_vl b, lw_vl m, lw_vl r, lw_vl s) {
    lw_vl t = __builtin_convertvector(acc, lw_vl) + b;
    t = (lw_vl)((lw_vul)t * (lw_vul)m + (lw_vul)r) >> s;
    t += e->zp;
    lw_vl lo = (lw_vl){0} + e->lo, hi = (lw_vl){0} + e->hi;
    t = lw_vlsel(t < lo, lo, t);
    t = lw_vlsel(t > hi, hi, t);
    return __builtin_convertvector(t, lw_vb);
}

static inline void lw_qlut(const lw_qepi *e, uint8_t *out, long n) {
    if (!e->lut) return;
    const uint8_t *lut = e->lut;
    const int x = e->lut_xor;
    for (long j = 0; j < n; j++) out[j] = lut[out[j] ^ x];
}

#if LW_VEC == 16 && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__)
#define LW_QFINISH_AVX512 1
/* 8 lanes of the epilogue in AVX-512 (vpmullq, vpsravq, vpmovqb): the generic 16 x int64 vector code gcc
 * writes for lw_qfinish_v is several times slower. */
static inline __m128i lw_qfinish8(__m256i acc, __m512i b, __m512i m, __m512i r, __m512i s, __m512i zp,
                                  __m512i lo, __m512i hi) {
    __m512i t = _mm512_add_epi64(_mm512_cvtepi32_epi64(acc), b);
    t = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(t, m), r), s);
    t = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(t, zp), lo), hi);
    return _mm512_cvtepi64_epi8(t);
}

static inline void lw_qfinish16(const int32_t *acc, const int64_t *b, const int64_t *m, const int64_t *r,
                                const int64_t *s, __m512i zp, __m512i lo, __m512i hi, uint8_t *out) {
    __m512i a = _mm512_loadu_si512(acc);
    __m128i y0 = lw_qfinish8(_mm512_castsi512_si256(a), _mm512_loadu_si512(b), _mm512_loadu_si512(m),
                             _mm512_loadu_si512(r), _mm512_loadu_si512(s), zp, lo, hi);
    __m128i y1 = lw_qfinish8(_mm512_extracti64x4_epi64(a, 1), _mm512_loadu_si512(b + 8), _mm512_loadu_si512(m + 8),
                             _mm512_loadu_si512(r + 8), _mm512_loadu_si512(s + 8), zp, lo, hi);
    _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi64(y0, y1));
}
#endif

/* out[j] = epilogue(acc[j]) for j < n; channel ch for every j (col == 0) or ch + j (col == 1). */
static void lw_qfinish_row(const lw_qepi *e, const int32_t *acc, long n, long ch, int col, uint8_t *out) {
    const int64_t *B = e->prm, *M = B + e->cpad, *R = M + e->cpad, *S = R + e->cpad;
    long j = 0;
#ifdef LW_QFINISH_AVX512
    const __m512i zp = _mm512_set1_epi64(e->zp), lo = _mm512_set1_epi64(e->lo), hi = _mm512_set1_epi64(e->hi);
    if (col) {
        for (; j + 16 <= n; j += 16)
            lw_qfinish16(acc + j, B + ch + j, M + ch + j, R + ch + j, S + ch + j, zp, lo, hi, out + j);
    } else {
        const __m512i b = _mm512_set1_epi64(B[ch]), m = _mm512_set1_epi64(M[ch]), r = _mm512_set1_epi64(R[ch]);
        const __m512i s = _mm512_set1_epi64(S[ch]);
        for (; j + 16 <= n; j += 16) {
            __m512i a = _mm512_loadu_si512(acc + j);
            __m128i y0 = lw_qfinish8(_mm512_castsi512_si256(a), b, m, r, s, zp, lo, hi);
            __m128i y1 = lw_qfinish8(_mm512_extracti64x4_epi64(a, 1), b, m, r, s, zp, lo, hi);
            _mm_storeu_si128((__m128i *)(out + j), _mm_unpacklo_epi64(y0, y1));
        }
    }
#else
    if (col) {
        for (; j + LW_VEC <= n; j += LW_VEC) {
            lw_vl b, m, r, s;
            memcpy(&b, B + ch + j, sizeof b);
            memcpy(&m, M + ch + j, sizeof m);
            memcpy(&r, R + ch + j, sizeof r);
            memcpy(&s, S + ch + j, sizeof s);
            lw_vb y = lw_qfinish_v(e, lw_qload(acc + j), b, m, r, s);
            memcpy(out + j, &y, sizeof y);
        }
    } else {
        const lw_vl b = (lw_vl){0} + B[ch], m = (lw_vl){0} + M[ch], r = (lw_vl){0} + R[ch], s = (lw_vl){0} + S[ch];
        for (; j + LW_VEC <= n; j += LW_VEC) {
            lw_vb y = lw_qfinish_v(e, lw_qload(acc + j), b, m, r, s);
            memcpy(out + j, &y, sizeof y);
        }
    }
#endif
    if (col)
        for (; j < n; j++)
            out[j] = lw_qfinish1(e, lw_requant1((int64_t)acc[j] + B[ch + j], M[ch + j], R[ch + j], S[ch + j]));
    else
        for (; j < n; j++) out[j] = lw_qfinish1(e, lw_requant1((int64_t)acc[j] + B[ch], M[ch], R[ch], S[ch]));
    lw_qlut(e, out, n);
}

/* --- int8 GEMM -------------------------------------------------------------------------------------- */

#define LW_QUKERNEL(R, AU)                                                                                \
    static void lw_qukernel_##R##_##AU(long k4, const uint8_t *restrict a, const uint8_t *restrict b,     \
                                       int32_t *restrict tile) {                                         \
        lw_vq acc[R][LW_QNV];                                                                             \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++)                                              \
            _Pragma("GCC unroll 16") for (int v = 0; v < LW_QNV; v++) acc[i][v] = (lw_vq){0};             \
        for (long k = 0; k < k4; k++) {                                                                   \
            lw_vq bv[LW_QNV];                                                                             \
            _Pragma("GCC unroll 16") for (int v = 0; v < LW_QNV; v++)                                     \
                bv[v] = lw_qload(b + (k * LW_QNR + v * LW_VEC) * 4);                                      \
            _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) {                                        \
                int32_t a4;                                                                               \
                memcpy(&a4, a + (k * LW_QMR + i) * 4, 4);                                                 \
                const lw_vq av = (lw_vq){0} + a4;                                                         \
                _Pragma("GCC unroll 16") for (int v = 0; v < LW_QNV; v++)                                 \
                    acc[i][v] = AU ? lw_dp4(acc[i][v], av, bv[v]) : lw_dp4(acc[i][v], bv[v], av);        \
            }                                                                                             \
        }                                                                                                 \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++)                                              \
            _Pragma("GCC unroll 16") for (int v = 0; v < LW_QNV; v++)                                     \
                lw_qstore(tile + i * LW_QNR + v * LW_VEC, acc[i][v]);                                     \
    }

#define LW_QUKERNEL_EXPAND(R, AU) LW_QUKERNEL(R, AU)
#define LW_QUKERNEL_FULL(AU) LW_CAT(LW_CAT(lw_qukernel_, LW_QMR), LW_CAT(_, AU))

LW_QUKERNEL(1, 0)
LW_QUKERNEL(1, 1)
LW_QUKERNEL(2, 0)
LW_QUKERNEL(2, 1)
LW_QUKERNEL(4, 0)
LW_QUKERNEL(4, 1)
#if LW_QMR != 4
LW_QUKERNEL_EXPAND(LW_QMR, 0)
LW_QUKERNEL_EXPAND(LW_QMR, 1)
#endif

/* The first mr rows of a tile (rows past mr read zero padding). au: A is the unsigned operand. */
static inline void lw_qukernel(int mr, int au, long k4, const uint8_t *a, const uint8_t *b, int32_t *tile) {
    if (au) {
        if (mr == 1) lw_qukernel_1_1(k4, a, b, tile);
        else if (mr == 2) lw_qukernel_2_1(k4, a, b, tile);
        else if (mr <= 4) lw_qukernel_4_1(k4, a, b, tile);
        else LW_QUKERNEL_FULL(1)(k4, a, b, tile);
    } else {
        if (mr == 1) lw_qukernel_1_0(k4, a, b, tile);
        else if (mr == 2) lw_qukernel_2_0(k4, a, b, tile);
        else if (mr <= 4) lw_qukernel_4_0(k4, a, b, tile);
        else LW_QUKERNEL_FULL(0)(k4, a, b, tile);
    }
}

/* One GEMM of a batch: C = epilogue(wrap32(A'.B' + rowc[i] + colc[j])). */
typedef struct {
    const uint8_t *a;      /* packed A */
    const uint8_t *b;      /* packed B */
    uint8_t *c;            /* C[M][N] (int8 or uint8), row stride ldc */
    const int32_t *rowc;   /* per-row correction (zero points, operand shifts), or NULL */
    const int32_t *colc;   /* per-column correction, or NULL */
    long chan0;            /* epilogue channel of row 0 (col_channels == 0) or of column 0 */
} lw_qgemm_item;

typedef struct {
    long M, N, K4, ldc;
    int a_unsigned;        /* A holds the unsigned operand (else B does) */
    int channels;          /* epilogue channels: 0 rows (Conv), 1 columns (MatMul), 2 none (per tensor) */
    lw_qepi epi;
    int out32;             /* C is int32 (ldc in elements): the corrected accumulator, no epilogue
                              (MatMulInteger, ConvInteger) */
} lw_qgemm_shape;

static void lw_qgemm_block(const lw_qgemm_shape *s, const lw_qgemm_item *it, long mp0, long mp1, long np0,
                           long np1) {
    int32_t tile[LW_QMR * LW_QNR] __attribute__((aligned(64)));
    const long K4 = s->K4;
    for (long np = np0; np < np1; np++) {
        const long j0 = np * LW_QNR;
        const long nr = LW_MIN((long)LW_QNR, s->N - j0);
        const uint8_t *bp = it->b + np * K4 * LW_QNR * 4;
        for (long mp = mp0; mp < mp1; mp++) {
            const long i0 = mp * LW_QMR;
            const int mr = (int)LW_MIN((long)LW_QMR, s->M - i0);
            lw_qukernel(mr, s->a_unsigned, K4, it->a + mp * K4 * LW_QMR * 4, bp, tile);
            for (int i = 0; i < mr; i++) {
                int32_t *t = tile + i * LW_QNR;
                const uint32_t rc = it->rowc ? (uint32_t)it->rowc[i0 + i] : 0u;
                if (it->colc) {
                    const int32_t *cc = it->colc + j0;
                    for (long j = 0; j < nr; j++) t[j] = (int32_t)((uint32_t)t[j] + (uint32_t)cc[j] + rc);
                } else if (rc) {
                    for (long j = 0; j < LW_QNR; j++) t[j] = (int32_t)((uint32_t)t[j] + rc);
                }
                if (s->out32) {
                    memcpy((int32_t *)(void *)it->c + (i0 + i) * s->ldc + j0, t, (size_t)nr * sizeof(int32_t));
                    continue;
                }
                uint8_t *c = it->c + (i0 + i) * s->ldc + j0;
                if (s->channels == 1) lw_qfinish_row(&s->epi, t, nr, it->chan0 + j0, 1, c);
                else if (s->channels == 0) lw_qfinish_row(&s->epi, t, nr, it->chan0 + i0 + i, 0, c);
                else lw_qfinish_row(&s->epi, t, nr, 0, 0, c);
            }
        }
    }
}

/* A batch of int8 GEMMs of one shape, parallel over (GEMM, row block, column block) tasks. The K
 * reduction is never split, so results do not depend on the thread count. */
static void lw_qgemm(int nt, const lw_qgemm_shape *s, const lw_qgemm_item *items, long count) {
    long mp = LW_CDIV(s->M, LW_QMR), np = LW_CDIV(s->N, LW_QNR);
    long mb = LW_MIN(mp, LW_MAX(1L, 192L / LW_QMR)), nb = LW_MIN(np, LW_MAX(1L, 512L / LW_QNR));
    while (count * LW_CDIV(mp, mb) * LW_CDIV(np, nb) < 2L * nt && (mb > 1 || nb > 1)) {
        if (nb >= mb * LW_QMR / LW_QNR && nb > 1) nb = LW_CDIV(nb, 2);
        else mb = LW_CDIV(mb, 2);
    }
    const long mt = LW_CDIV(mp, mb), ntiles = LW_CDIV(np, nb), tasks = count * mt * ntiles;
    const double macs = (double)s->M * (double)s->N * (double)s->K4 * 4.0 * (double)count;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && tasks > 1 && macs > 4e5)
    for (long t = 0; t < tasks; t++) {
        long item = t / (mt * ntiles), r = t % (mt * ntiles);
        long bm = r % mt, bn = r / mt;
        lw_qgemm_block(s, items + item, bm * mb, LW_MIN(mp, (bm + 1) * mb), bn * nb, LW_MIN(np, (bn + 1) * nb));
    }
}

/* corr[i] = add + scale * sum[i] (modulo 2^32) for n sums. */
static inline void lw_qcorr(int32_t *corr, const int32_t *sum, long n, int32_t scale, int32_t add) {
    for (long i = 0; i < n; i++) corr[i] = (int32_t)((uint32_t)add + (uint32_t)scale * (uint32_t)sum[i]);
}

/* Sums over K of each of the width lanes of a packed panel [K4][width][4] (bytes signed or not). */
static void lw_qpanel_sums(const uint8_t *panel, long k4, long width, int is_signed, int32_t *sums) {
    for (long j = 0; j < width; j++) sums[j] = 0;
    for (long k = 0; k < k4; k++)
        for (long j = 0; j < width; j++) {
            const uint8_t *p = panel + (k * width + j) * 4;
            int32_t s = is_signed ? (int8_t)p[0] + (int8_t)p[1] + (int8_t)p[2] + (int8_t)p[3]
                                  : p[0] + p[1] + p[2] + p[3];
            sums[j] = (int32_t)((uint32_t)sums[j] + (uint32_t)s);
        }
}

/* Interleave 4 rows of LW_QNR bytes into one k-group of a B panel ([LW_QNR][4]), xor flip. */
static inline void lw_qinterleave4(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, const uint8_t *r3,
                                   uint32_t flip, uint8_t *dst) {
    uint32_t out[LW_QNR];
    for (int j = 0; j < LW_QNR; j++)
        out[j] = ((uint32_t)r0[j] | (uint32_t)r1[j] << 8 | (uint32_t)r2[j] << 16 | (uint32_t)r3[j] << 24) ^ flip;
    memcpy(dst, out, sizeof out);
}

/* Pack count matrices src + m * src_stride (element (i, k) at i * rs + k * cs, bytes xor flip) into packed A
 * panels; when corr is given, corr[m * rows + i] = add + scale * (sum over k of the packed row). */
static void lw_qpack_a(int nt, const uint8_t *src, long src_stride, long count, long rs, long cs, long M, long K,
                       uint8_t flip, int is_signed, uint8_t *dst, int32_t *corr, int32_t scale, int32_t add) {
    const long panels = LW_CDIV(M, LW_QMR), K4 = LW_CDIV(K, 4), size = panels * LW_QMR * K4 * 4;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && count * M * K > 65536)
    for (long t = 0; t < count * panels; t++) {
        long m = t / panels, p = t % panels, i0 = p * LW_QMR;
        int mr = (int)LW_MIN((long)LW_QMR, M - i0);
        const uint8_t *s = src + m * src_stride + i0 * rs;
        uint8_t *d = dst + m * size + p * LW_QMR * K4 * 4;
        const uint32_t flip4 = flip * 0x01010101u;
        const long full = cs == 1 ? K / 4 : 0; /* k-groups copied as whole 4-byte words */
        for (int i = 0; i < LW_QMR; i++) {
            if (i >= mr) {
                for (long k4 = 0; k4 < K4; k4++) memset(d + (k4 * LW_QMR + i) * 4, 0, 4);
                continue;
            }
            const uint8_t *si = s + i * rs;
            for (long k4 = 0; k4 < full; k4++) {
                uint32_t v;
                memcpy(&v, si + k4 * 4, 4);
                v ^= flip4;
                memcpy(d + (k4 * LW_QMR + i) * 4, &v, 4);
            }
            for (long k4 = full; k4 < K4; k4++)
                for (int b = 0; b < 4; b++) {
                    long k = k4 * 4 + b;
                    d[(k4 * LW_QMR + i) * 4 + b] = k < K ? si[k * cs] ^ flip : 0;
                }
        }
        if (corr) {
            int32_t sums[LW_QMR];
            lw_qpanel_sums(d, K4, LW_QMR, is_signed, sums);
            lw_qcorr(corr + m * panels * LW_QMR + i0, sums, LW_QMR, scale, add);
        }
    }
}

/* Pack count matrices src + m * src_stride (element (k, j) at k * rs + j * cs, bytes xor flip) into packed B
 * panels; when corr is given, corr[m * cols + j] = add + scale * (sum over k of the packed column). */
static void lw_qpack_b(int nt, const uint8_t *src, long src_stride, long count, long rs, long cs, long K, long N,
                       uint8_t flip, int is_signed, uint8_t *dst, int32_t *corr, int32_t scale, int32_t add) {
    const long panels = LW_CDIV(N, LW_QNR), K4 = LW_CDIV(K, 4), size = panels * LW_QNR * K4 * 4;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && count * N * K > 65536)
    for (long t = 0; t < count * panels; t++) {
        long m = t / panels, p = t % panels, j0 = p * LW_QNR;
        int nr = (int)LW_MIN((long)LW_QNR, N - j0);
        const uint8_t *s = src + m * src_stride + j0 * cs;
        uint8_t *d = dst + m * size + p * LW_QNR * K4 * 4;
        uint8_t rows[4][LW_QNR];
        for (long k4 = 0; k4 < K4; k4++) {
            for (int b = 0; b < 4; b++) {
                long k = k4 * 4 + b;
                if (k >= K) { memset(rows[b], flip, LW_QNR); continue; }
                const uint8_t *sk = s + k * rs;
                if (cs == 1) memcpy(rows[b], sk, (size_t)nr);
                else for (int j = 0; j < nr; j++) rows[b][j] = sk[j * cs];
                memset(rows[b] + nr, flip, (size_t)(LW_QNR - nr));
            }
            lw_qinterleave4(rows[0], rows[1], rows[2], rows[3], flip * 0x01010101u, d + k4 * LW_QNR * 4);
        }
        if (corr) {
            int32_t sums[LW_QNR];
            lw_qpanel_sums(d, K4, LW_QNR, is_signed, sums);
            lw_qcorr(corr + m * panels * LW_QNR + j0, sums, LW_QNR, scale, add);
        }
    }
}

/* --- convolution ---------------------------------------------------------------------------------- */

/* d[t] = row[iw0 + t * sw] for t < n, pad where that column is outside [0, W). */
static inline void lw_qim2col_run(uint8_t *d, const uint8_t *row, long iw0, long sw, long W, long n,
                                  uint8_t pad) {
    long lo = iw0 >= 0 ? 0 : LW_MIN(n, LW_CDIV(-iw0, sw));
    long hi = iw0 >= W ? lo : LW_MAX(lo, LW_MIN(n, (W - 1 - iw0) / sw + 1));
    for (long t = 0; t < lo; t++) d[t] = pad;
    const uint8_t *src = row + iw0;
    if (sw == 1) memcpy(d + lo, src + lo, (size_t)(hi - lo));
    else if (sw == 2) for (long t = lo; t < hi; t++) d[t] = src[2 * t];
    else for (long t = lo; t < hi; t++) d[t] = src[t * sw];
    for (long t = hi; t < n; t++) d[t] = pad;
}

/* An int8 convolution: x bytes xor flip are the unsigned operand (the input + 128 when it is int8), padded
 * with pad (the input zero point's byte); weights are packed A per group, signed. colc_scale != 0 (a weight
 * zero point): per-position corrections colc_scale * (sum of the column) are added. */
typedef struct {
    lw_conv_geom g;
    uint8_t flip, pad;
    int32_t colc_scale;
    int out32;             /* y is int32, the raw accumulator (ConvInteger); e is then unused */
} lw_qconv_geom;

/* A panel's K rows of LW_QNR bytes are produced one at a time into a 4-row buffer; every 4 rows become one
 * k-group of the packed panel. */
typedef uint8_t lw_vrow __attribute__((vector_size(LW_QNR)));

typedef struct {
    uint8_t rows[4][LW_QNR] __attribute__((aligned(LW_QNR)));
    uint8_t *dst;
    uint32_t flip;
    int b;
} lw_qrows;

static inline uint8_t *lw_qrow(lw_qrows *r) { return r->rows[r->b]; }

static inline void lw_qrow_done(lw_qrows *r) {
    if (++r->b == 4) {
        lw_qinterleave4(r->rows[0], r->rows[1], r->rows[2], r->rows[3], r->flip, r->dst);
        r->dst += 4 * LW_QNR;
        r->b = 0;
    }
}

/* Pad the last k-group with rows that are zero once flipped. */
static inline void lw_qrows_flush(lw_qrows *r) {
    while (r->b) {
        memset(lw_qrow(r), (int)(r->flip & 0xff), LW_QNR);
        lw_qrow_done(r);
    }
}

#define LW_QTAPS 64 /* largest KH * KW the masked-load im2col handles */

/* im2col of one panel when its positions are contiguous in the input (stride 1, output rows as wide as the
 * input rows): each (channel, tap) row is one LW_QNR-byte load, masked to the pad byte outside the image. */
static int lw_qim2col_contiguous(const lw_conv_geom *g, const uint8_t *x, uint8_t pad, long p0, long nr,
                                 lw_qrows *r) {
    const long taps = g->KH * g->KW, HW = g->H * g->W, Cg = g->C / g->G;
    if (taps > LW_QTAPS || g->SW != 1 || g->SH != 1 || g->OW != g->W) return 0;
    const long oh0 = p0 / g->OW, ow0 = p0 % g->OW;
    const long base0 = oh0 * g->W + ow0;
    lw_vrow mask[LW_QTAPS];
    long off[LW_QTAPS];
    for (long kh = 0, t = 0; kh < g->KH; kh++)
        for (long kw = 0; kw < g->KW; kw++, t++) {
            off[t] = (kh * g->DH - g->PH) * g->W + kw * g->DW - g->PW;
            for (long j = 0; j < LW_QNR; j++) {
                long p = p0 + j, oh = p / g->OW, ow = p % g->OW;
                long ih = oh + kh * g->DH - g->PH, iw = ow + kw * g->DW - g->PW;
                mask[t][j] = j < nr && ih >= 0 && ih < g->H && iw >= 0 && iw < g->W ? 0xff : 0;
            }
        }
    const lw_vrow padv = (lw_vrow){0} + pad;
    const uint8_t *end = x + Cg * HW;
    for (long c = 0; c < Cg; c++) {
        const uint8_t *xc = x + c * HW + base0;
        for (long t = 0; t < taps; t++) {
            const uint8_t *src = xc + off[t];
            lw_vrow v;
            if (src >= x && src + LW_QNR <= end) {
                memcpy(&v, src, LW_QNR);
            } else {
                for (long j = 0; j < LW_QNR; j++) v[j] = mask[t][j] ? src[j] : pad;
            }
            v = (v & mask[t]) | (padv & ~mask[t]);
            memcpy(lw_qrow(r), &v, LW_QNR);
            lw_qrow_done(r);
        }
    }
    return 1;
}

#define LW_QSEGS 4 /* output-row segments a panel may span in lw_qim2col_segments */

typedef uint16_t lw_vrow2 __attribute__((vector_size(2 * LW_QNR)));

/* im2col of one panel with strides 1 or 2 along W: the panel's positions fall into at most LW_QSEGS runs
 * on one output row each; for every (channel, tap) each run is one LW_QNR-byte load (stride 2: 2 * LW_QNR
 * bytes, even bytes kept) placed so that lane j reads position j, merged under per-run masks that also
 * put the pad byte outside the image. */
static int lw_qim2col_segments(const lw_conv_geom *g, const uint8_t *x, uint8_t pad, long p0, long nr,
                               lw_qrows *r) {
    const long taps = g->KH * g->KW, HW = g->H * g->W, Cg = g->C / g->G, SW = g->SW;
    if (taps > LW_QTAPS || (SW != 1 && SW != 2)) return 0;
    long seg_j[LW_QSEGS + 1], seg_oh[LW_QSEGS], seg_ow[LW_QSEGS], segs = 0;
    for (long j = 0; j < nr;) {
        if (segs == LW_QSEGS) return 0;
        long p = p0 + j, oh = p / g->OW, ow = p % g->OW, len = LW_MIN(nr - j, g->OW - ow);
        seg_j[segs] = j; seg_oh[segs] = oh; seg_ow[segs] = ow; segs++;
        j += len;
    }
    seg_j[segs] = nr;
    lw_vrow mask[LW_QTAPS][LW_QSEGS], iota;
    for (int j = 0; j < LW_QNR; j++) iota[j] = (uint8_t)j;
    long off[LW_QTAPS][LW_QSEGS];
    unsigned char live[LW_QTAPS][LW_QSEGS];
    for (long kh = 0, t = 0; kh < g->KH; kh++)
        for (long kw = 0; kw < g->KW; kw++, t++)
            for (long sg = 0; sg < segs; sg++) {
                const long ih = seg_oh[sg] * g->SH - g->PH + kh * g->DH;
                const long iw0 = seg_ow[sg] * SW - g->PW + kw * g->DW; /* column of the run's first position */
                off[t][sg] = ih * g->W + iw0 - seg_j[sg] * SW;         /* lane j reads off + j * SW */
                /* valid lanes: one range, j - seg_j in [ceil(-iw0 / SW), (W - 1 - iw0) / SW] inside the run */
                long lo, hi;
                lw_tap_range(iw0, SW, g->W, seg_j[sg + 1] - seg_j[sg], &lo, &hi);
                lo += seg_j[sg];
                hi += seg_j[sg];
                if (ih < 0 || ih >= g->H || lo >= hi) {
                    live[t][sg] = 0;
                    continue;
                }
                live[t][sg] = 1;
                mask[t][sg] = (lw_vrow)((iota >= (uint8_t)lo) & (iota < (uint8_t)hi));
            }
    const lw_vrow padv = (lw_vrow){0} + pad;
    const uint8_t *end = x + Cg * HW;
    for (long c = 0; c < Cg; c++) {
        const uint8_t *xc = x + c * HW;
        for (long t = 0; t < taps; t++) {
            lw_vrow v = padv;
            for (long sg = 0; sg < segs; sg++) {
                if (!live[t][sg]) continue;
                const uint8_t *src = xc + off[t][sg];
                lw_vrow ld;
                if (src >= x && src + SW * LW_QNR <= end) {
                    if (SW == 1) {
                        memcpy(&ld, src, LW_QNR);
                    } else {
                        lw_vrow2 wide;
                        memcpy(&wide, src, sizeof wide);
                        ld = __builtin_convertvector(wide, lw_vrow);
                    }
                } else {
                    for (long j = 0; j < LW_QNR; j++) ld[j] = mask[t][sg][j] ? src[j * SW] : pad;
                }
                v = (ld & mask[t][sg]) | (v & ~mask[t][sg]);
            }
            memcpy(lw_qrow(r), &v, LW_QNR);
            lw_qrow_done(r);
        }
    }
    return 1;
}

/* im2col of one image's group into packed B panels [np0, np1) (and their column corrections). */
static void lw_qim2col_panels(const lw_qconv_geom *q, const uint8_t *x, uint8_t *dst, int32_t *colc, long np0,
                              long np1) {
    const lw_conv_geom *g = &q->g;
    const long Cg = g->C / g->G, taps = g->KH * g->KW, K = Cg * taps, K4 = LW_CDIV(K, 4);
    const long P = g->OH * g->OW, HW = g->H * g->W;
    const int pointwise = taps == 1 && g->SH == 1 && g->SW == 1 && g->PH == 0 && g->PW == 0 && g->OH == g->H
                          && g->OW == g->W;
    lw_qrows r;
    r.flip = q->flip * 0x01010101u;
    for (long np = np0; np < np1; np++) {
        uint8_t *d = dst + np * K4 * LW_QNR * 4;
        const long p0 = np * LW_QNR, nr = LW_MIN((long)LW_QNR, P - p0);
        r.dst = d;
        r.b = 0;
        if (pointwise) {
            for (long c = 0; c < Cg; c++) {
                uint8_t *row = lw_qrow(&r);
                if (nr == LW_QNR) memcpy(row, x + c * HW + p0, LW_QNR);
                else { memcpy(row, x + c * HW + p0, (size_t)nr); memset(row + nr, q->flip, (size_t)(LW_QNR - nr)); }
                lw_qrow_done(&r);
            }
        } else if (!lw_qim2col_contiguous(g, x, q->pad, p0, nr, &r)
                   && !lw_qim2col_segments(g, x, q->pad, p0, nr, &r)) {
            /* Split the panel's positions into runs that stay on one output row. */
            long run_j[LW_QNR + 1], run_oh[LW_QNR + 1], run_ow[LW_QNR + 1], runs = 0;
            for (long j = 0; j < nr;) {
                long p = p0 + j, oh = p / g->OW, ow = p % g->OW, len = LW_MIN(nr - j, g->OW - ow);
                run_j[runs] = j; run_oh[runs] = oh; run_ow[runs] = ow; runs++;
                j += len;
            }
            run_j[runs] = nr;
            for (long c = 0; c < Cg; c++)
                for (long kh = 0; kh < g->KH; kh++)
                    for (long kw = 0; kw < g->KW; kw++) {
                        uint8_t *row = lw_qrow(&r);
                        for (long ri = 0; ri < runs; ri++) {
                            long j = run_j[ri], len = run_j[ri + 1] - j;
                            long ih = run_oh[ri] * g->SH - g->PH + kh * g->DH;
                            if (ih < 0 || ih >= g->H) { memset(row + j, q->pad, (size_t)len); continue; }
                            lw_qim2col_run(row + j, x + c * HW + ih * g->W, run_ow[ri] * g->SW - g->PW + kw * g->DW,
                                           g->SW, g->W, len, q->pad);
                        }
                        memset(row + nr, q->flip, (size_t)(LW_QNR - nr));
                        lw_qrow_done(&r);
                    }
        }
        lw_qrows_flush(&r);
        if (colc) {
            int32_t sums[LW_QNR];
            lw_qpanel_sums(d, K4, LW_QNR, 0, sums);
            lw_qcorr(colc + p0, sums, LW_QNR, q->colc_scale, 0);
        }
    }
}

/* Convolution through int8 im2col + the int8 GEMM. w: packed A per group ([G][ceil(Mg/QMR)][K4][QMR][4]),
 * rowc: per output channel correction [M]. ws: G GEMM items, the packed columns of one image
 * ([G][ceil(P/QNR)][K4][QNR][4]) and, with a weight zero point, the column corrections [G][ceil(P/QNR)*QNR]. */
static void lw_qconv2d(int nt, const lw_qconv_geom *q, const uint8_t *x, const uint8_t *w, const int32_t *rowc,
                       uint8_t *y, unsigned char *ws, const lw_qepi *e) {
    const lw_conv_geom *g = &q->g;
    const long G = g->G, Cg = g->C / G, Mg = g->M / G, K4 = LW_CDIV(Cg * g->KH * g->KW, 4), P = g->OH * g->OW;
    const long np = LW_CDIV(P, LW_QNR), a_size = LW_CDIV(Mg, LW_QMR) * LW_QMR * K4 * 4;
    const long b_size = np * LW_QNR * K4 * 4;
    lw_qgemm_item *items = (lw_qgemm_item *)ws;
    uint8_t *col = ws + LW_ALIGN64((size_t)G * sizeof(lw_qgemm_item));
    int32_t *colc = q->colc_scale ? (int32_t *)(col + LW_ALIGN64((size_t)(G * b_size))) : NULL;
    const lw_qgemm_shape s = {Mg, P, K4, P, 0, 0, *e, q->out32};
    const long esize = q->out32 ? 4 : 1;
    const long nbf = LW_MAX(1, 512 / LW_QNR), blocks = LW_CDIV(np, nbf);
    const int fused = G * blocks >= 2L * nt;
    for (long n = 0; n < g->N; n++) {
        const uint8_t *xn = x + n * g->C * g->H * g->W;
        for (long gi = 0; gi < G; gi++) {
            items[gi].a = w + gi * a_size;
            items[gi].b = col + gi * b_size;
            items[gi].c = y + (n * g->M + gi * Mg) * P * esize;
            items[gi].rowc = rowc ? rowc + gi * Mg : NULL;
            items[gi].colc = colc ? colc + gi * np * LW_QNR : NULL;
            items[gi].chan0 = gi * Mg;
        }
        if (fused) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
            for (long t = 0; t < G * blocks; t++) {
                long gi = t / blocks, p0 = (t % blocks) * nbf, p1 = LW_MIN(np, p0 + nbf);
                lw_qim2col_panels(q, xn + gi * Cg * g->H * g->W, col + gi * b_size,
                                  colc ? colc + gi * np * LW_QNR : NULL, p0, p1);
                lw_qgemm_block(&s, items + gi, 0, LW_CDIV(Mg, LW_QMR), p0, p1);
            }
        } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && G * np > 1)
            for (long t = 0; t < G * np; t++) {
                long gi = t / np;
                lw_qim2col_panels(q, xn + gi * Cg * g->H * g->W, col + gi * b_size,
                                  colc ? colc + gi * np * LW_QNR : NULL, t % np, t % np + 1);
            }
            lw_qgemm(nt, &s, items, G);
        }
    }
}

/* One output row of a depthwise convolution from its padded float plane rows (KH, KW, SW constants after
 * inlining for the common 3x3 kernels, so the taps unroll and the weights stay in registers). */
static inline __attribute__((always_inline)) void lw_qdw_row(const float *base, long Wp, long DH, long DW,
                                                             const float *wp, long KH, long KW, long SW, long OW,
                                                             int32_t *row) {
    for (long o = 0; o < OW; o += LW_VEC) {
        lw_vf a = (lw_vf){0};
        for (long kh = 0; kh < KH; kh++) {
            const float *xr = base + kh * DH * Wp + o * SW;
            for (long kw = 0; kw < KW; kw++) {
                lw_vf v = SW == 1 ? lw_load(xr + kw * DW) : lw_load_even(xr + kw * DW);
                a += lw_splat(wp[kh * KW + kw]) * v;
            }
        }
        lw_qstore(row + o, __builtin_convertvector(a, lw_vq));
    }
}

/* Depthwise int8 convolution (G == C), direct: each output plane's input, minus the zero point, is copied
 * into a zero-padded float plane (slot bytes per channel), every output row is accumulated LW_VEC columns at a
 * time (strides 1 and 2) with float FMAs, and the plane is requantised in one pass. Exact: every product is
 * an integer of magnitude <= 255 * 255 and every partial sum one below taps * 65025 < 2^24 (the generator
 * only sends kernels with taps <= 256 here), so float arithmetic holds them exactly. w: [M][KH][KW] floats,
 * already minus the weight zero point. */
static void lw_qdepthwise2d(int nt, const lw_conv_geom *g, const uint8_t *x, int x_signed, int32_t zx,
                            const float *w, uint8_t *y, unsigned char *ws, long slot, const lw_qepi *e) {
    const long mult = g->M / g->C, P = g->OH * g->OW, taps = g->KH * g->KW;
    const long Hp = (g->OH - 1) * g->SH + (g->KH - 1) * g->DH + 1;
    const long Wp = LW_MAX(g->PW + g->W, (g->OW - 1) * g->SW + (g->KW - 1) * g->DW + 1);
    const long SW = g->SW;
    for (long n = 0; n < g->N; n++)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && g->M > 1)
    for (long m = 0; m < g->M; m++) {
        float *pad = (float *)(ws + m * slot);
        int32_t *acc = (int32_t *)(pad + Hp * Wp + 2 * LW_VEC);
        const uint8_t *xp = x + (n * g->C + m / mult) * g->H * g->W;
        const long left = LW_MIN(g->PW, Wp), count = LW_MAX(0, LW_MIN(g->W, Wp - g->PW));
        for (long r = 0; r < Hp; r++) {
            float *d = pad + r * Wp;
            long ih = r - g->PH;
            if (ih < 0 || ih >= g->H) { memset(d, 0, (size_t)Wp * 4); continue; }
            memset(d, 0, (size_t)left * 4);
            const uint8_t *src = xp + ih * g->W;
            if (x_signed) for (long c = 0; c < count; c++) d[left + c] = (float)((int8_t)src[c] - zx);
            else for (long c = 0; c < count; c++) d[left + c] = (float)(src[c] - zx);
            for (long c = left + count; c < Wp; c++) d[c] = 0.0f;
        }
        memset(pad + Hp * Wp, 0, 2 * LW_VEC * 4);
        const float *wp = w + m * taps;
        for (long oh = 0; oh < g->OH; oh++) {
            const float *base = pad + oh * g->SH * Wp;
            int32_t *row = acc + oh * g->OW; /* vector stores past the row end are overwritten by the next row */
            if (g->KH == 3 && g->KW == 3 && SW == 1) lw_qdw_row(base, Wp, g->DH, g->DW, wp, 3, 3, 1, g->OW, row);
            else if (g->KH == 3 && g->KW == 3 && SW == 2) lw_qdw_row(base, Wp, g->DH, g->DW, wp, 3, 3, 2, g->OW, row);
            else if (SW == 1) lw_qdw_row(base, Wp, g->DH, g->DW, wp, g->KH, g->KW, 1, g->OW, row);
            else if (SW == 2) lw_qdw_row(base, Wp, g->DH, g->DW, wp, g->KH, g->KW, 2, g->OW, row);
            else {
                for (long ow = 0; ow < g->OW; ow++) {
                    float a = 0.0f;
                    for (long kh = 0; kh < g->KH; kh++)
                        for (long kw = 0; kw < g->KW; kw++)
                            a += wp[kh * g->KW + kw] * base[kh * g->DH * Wp + ow * SW + kw * g->DW];
                    row[ow] = (int32_t)a;
                }
            }
        }
        lw_qfinish_row(e, acc, P, m, 0, y + (n * g->M + m) * P);
    }
}

/* --- pooling ---------------------------------------------------------------------------------------- */

/* Average pooling with uniform window counts: y = epilogue(sum over the window's valid taps of x - zx). */
static void lw_qavgpool2d(int nt, const lw_pool_geom *g, const uint8_t *x, int x_signed, int32_t zx, uint8_t *y,
                          const lw_qepi *e) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && g->planes * g->OH * g->OW > 16384)
    for (long t = 0; t < g->planes; t++) {
        int32_t acc[256];
        const uint8_t *xp = x + t * g->H * g->W;
        for (long oh = 0; oh < g->OH; oh++)
            for (long o0 = 0; o0 < g->OW; o0 += 256) {
                const long n = LW_MIN(256L, g->OW - o0);
                for (long j = 0; j < n; j++) acc[j] = 0;
                for (long kh = 0; kh < g->KH; kh++) {
                    long ih = oh * g->SH - g->PH + kh * g->DH;
                    if (ih < 0 || ih >= g->H) continue;
                    const uint8_t *xr = xp + ih * g->W;
                    for (long kw = 0; kw < g->KW; kw++) {
                        long off = kw * g->DW - g->PW, lo, hi;
                        lw_tap_range(off, g->SW, g->W, g->OW, &lo, &hi);
                        lo = LW_MAX(lo, o0); hi = LW_MIN(hi, o0 + n);
                        if (x_signed) for (long ow = lo; ow < hi; ow++) acc[ow - o0] += (int8_t)xr[ow * g->SW + off] - zx;
                        else for (long ow = lo; ow < hi; ow++) acc[ow - o0] += xr[ow * g->SW + off] - zx;
                    }
                }
                lw_qfinish_row(e, acc, n, 0, 0, y + (t * g->OH + oh) * g->OW + o0);
            }
    }
}

/* Global average pooling: y[t] = epilogue(sum over the P positions of x - zx). */
static void lw_qglobal_avgpool(int nt, const uint8_t *x, int x_signed, int32_t zx, uint8_t *y, long planes,
                               long P, const lw_qepi *e) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * P > 65536)
    for (long t = 0; t < planes; t++) {
        const uint8_t *xp = x + t * P;
        int32_t s = 0;
        if (x_signed) for (long i = 0; i < P; i++) s += (int8_t)xp[i];
        else for (long i = 0; i < P; i++) s += xp[i];
        int32_t acc = s - (int32_t)P * zx;
        lw_qfinish_row(e, &acc, 1, 0, 0, y + t);
    }
}

/* Max pooling of int8 / uint8 (lw_pool_geom of kernels_ops.c; windows have at least one valid tap). */
#define LW_QMAXPOOL(NAME, T, INIT)                                                                        \
    static void NAME(int nt, const lw_pool_geom *g, const T *x, T *y) {                                   \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && g->planes * g->OH * g->OW > 16384)") \
        for (long t = 0; t < g->planes; t++)                                                              \
            for (long oh = 0; oh < g->OH; oh++) {                                                         \
                T *row = y + (t * g->OH + oh) * g->OW;                                                    \
                const T *xp = x + t * g->H * g->W;                                                        \
                for (long ow = 0; ow < g->OW; ow++) row[ow] = INIT;                                       \
                for (long kh = 0; kh < g->KH; kh++) {                                                     \
                    long ih = oh * g->SH - g->PH + kh * g->DH;                                            \
                    if (ih < 0 || ih >= g->H) continue;                                                   \
                    const T *xr = xp + ih * g->W;                                                         \
                    for (long kw = 0; kw < g->KW; kw++) {                                                 \
                        long off = kw * g->DW - g->PW, lo, hi;                                            \
                        lw_tap_range(off, g->SW, g->W, g->OW, &lo, &hi);                                  \
                        const T *src = xr + off;                                                          \
                        if (g->SW == 1) for (long ow = lo; ow < hi; ow++) row[ow] = LW_MAX(src[ow], row[ow]); \
                        else for (long ow = lo; ow < hi; ow++) row[ow] = LW_MAX(src[ow * g->SW], row[ow]); \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
    }                                                                                                     \
    static void NAME##_global(int nt, const T *x, T *y, long planes, long P) {                            \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * P > 65536)")    \
        for (long t = 0; t < planes; t++) {                                                               \
            T m = INIT;                                                                                   \
            for (long i = 0; i < P; i++) m = LW_MAX(x[t * P + i], m);                                     \
            y[t] = m;                                                                                     \
        }                                                                                                 \
    }

LW_QMAXPOOL(lw_maxpool2d_i8, int8_t, -128)
LW_QMAXPOOL(lw_maxpool2d_u8, uint8_t, 0)

/* --- QuantizeLinear / DequantizeLinear ------------------------------------------------------------- */

#define LW_QDQ_CHUNK 16384 /* inner elements per task of the quantize / dequantize kernels */

/* The QuantizeLinear kernels writing TO elements (uint8_t: int8 and uint8 outputs, uint16_t: int16 and
 * uint16, the two's-complement bit pattern of the saturated value): y = saturate(rint(x / scale) + zp), in
 * float32 division, round half to even in the default rounding mode, NaN giving qmin like the reference.
 * - lw_quantize##S: scale[c], zp[c] over [outer][C][inner] (per tensor: C = 1); tasks are (row, chunk of
 *   LW_QDQ_CHUNK inner elements), so a per-tensor quantization (one row) still spreads over the threads;
 * - lw_quantize_last##S: per axis along the innermost axis (inner == 1), parameters change every element;
 * - lw_quantize_blocked##S: block_size B along the axis: scale and zp are [outer][ceil(C / B)][inner],
 *   element (o, c, i) uses entry (o, c / B, i). */
/* One QuantizeLinear element: x / scale rounded half to even, saturated to [qmin, qmax] after adding zp
 * (NaN gives qmin), as the stored bit pattern. */
static inline int32_t lw_quantize_one(float x, float scale, int32_t zp, int32_t qmin, int32_t qmax) {
    const float lo = (float)(qmin - zp), hi = (float)(qmax - zp);
    float v = __builtin_rintf(x / scale);
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = v == v ? v : lo;
    return (int32_t)v + zp;
}

#define LW_QUANTIZE_KERNELS(S, TO)                                                                        \
    static void lw_quantize##S(int nt, const float *x, TO *y, long outer, long C, long inner,              \
                               const float *scale, const int32_t *zp, int32_t qmin, int32_t qmax) {       \
        const long chunks = LW_CDIV(inner, LW_QDQ_CHUNK);                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * C * inner > 65536)") \
        for (long t = 0; t < outer * C * chunks; t++) {                                                   \
            const long row = t / chunks, c = row % C, i0 = t % chunks * LW_QDQ_CHUNK;                     \
            const long i1 = LW_MIN(inner, i0 + LW_QDQ_CHUNK);                                             \
            const float s = scale[c];                                                                     \
            const int32_t z = zp[c];                                                                      \
            const float *xp = x + row * inner;                                                            \
            TO *yp = y + row * inner;                                                                     \
            for (long i = i0; i < i1; i++) yp[i] = (TO)lw_quantize_one(xp[i], s, z, qmin, qmax);          \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    static void lw_quantize_last##S(int nt, const float *x, TO *y, long rows, long C, const float *scale, \
                                    const int32_t *zp, int32_t qmin, int32_t qmax) {                      \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows * C > 65536)")      \
        for (long r = 0; r < rows; r++)                                                                   \
            for (long c = 0; c < C; c++) {                                                                \
                y[r * C + c] = (TO)lw_quantize_one(x[r * C + c], scale[c], zp[c], qmin, qmax);            \
            }                                                                                             \
    }                                                                                                     \
                                                                                                          \
    static void lw_quantize_blocked##S(int nt, const float *x, TO *y, long outer, long C, long inner,     \
                                       long B, const float *scale, const int32_t *zp, int32_t qmin,       \
                                       int32_t qmax) {                                                    \
        const long CB = LW_CDIV(C, B);                                                                    \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * C * inner > 65536)") \
        for (long t = 0; t < outer * C; t++) {                                                            \
            const long o = t / C, c = t % C, p = (o * CB + c / B) * inner;                                \
            const float *xp = x + t * inner;                                                              \
            TO *yp = y + t * inner;                                                                       \
            for (long i = 0; i < inner; i++)                                                              \
                yp[i] = (TO)lw_quantize_one(xp[i], scale[p + i], zp[p + i], qmin, qmax);                  \
        }                                                                                                 \
    }

LW_QUANTIZE_KERNELS(, uint8_t)
LW_QUANTIZE_KERNELS(_16, uint16_t)

/* DequantizeLinear of T: y = (float)(x - zp) * scale, per tensor / per axis over [outer][C][inner]
 * (NAME; tasks as lw_quantize's) or blocked (NAME##_blocked, parameters as lw_quantize_blocked's). */
#define LW_DEQUANTIZE(NAME, T)                                                                            \
    static void NAME(int nt, const T *x, float *y, long outer, long C, long inner, const float *scale,     \
                     const int64_t *zp) {                                                                 \
        const long chunks = LW_CDIV(inner, LW_QDQ_CHUNK);                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * C * inner > 65536)") \
        for (long t = 0; t < outer * C * chunks; t++) {                                                   \
            const long row = t / chunks, c = row % C, i0 = t % chunks * LW_QDQ_CHUNK;                     \
            const long i1 = LW_MIN(inner, i0 + LW_QDQ_CHUNK);                                             \
            const float s = scale[c];                                                                     \
            const int64_t z = zp[c];                                                                      \
            const T *xp = x + row * inner;                                                                \
            float *yp = y + row * inner;                                                                  \
            for (long i = i0; i < i1; i++) yp[i] = (float)((int64_t)xp[i] - z) * s;                       \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    static void NAME##_blocked(int nt, const T *x, float *y, long outer, long C, long inner, long B,      \
                               const float *scale, const int64_t *zp) {                                   \
        const long CB = LW_CDIV(C, B);                                                                    \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1 && outer * C * inner > 65536)") \
        for (long t = 0; t < outer * C; t++) {                                                            \
            const long o = t / C, c = t % C, p = (o * CB + c / B) * inner;                                \
            const T *xp = x + t * inner;                                                                  \
            float *yp = y + t * inner;                                                                    \
            for (long i = 0; i < inner; i++) yp[i] = (float)((int64_t)xp[i] - zp[p + i]) * scale[p + i];  \
        }                                                                                                 \
    }

LW_DEQUANTIZE(lw_dequantize_i8, int8_t)
LW_DEQUANTIZE(lw_dequantize_u8, uint8_t)
LW_DEQUANTIZE(lw_dequantize_i16, int16_t)
LW_DEQUANTIZE(lw_dequantize_u16, uint16_t)
LW_DEQUANTIZE(lw_dequantize_i32, int32_t)

/* --- DynamicQuantizeLinear ------------------------------------------------------------------------- */

/* uint8 quantization over [min(x, 0), max(x, 0)], in float32 as ONNX Runtime computes it:
 * scale = (hi - lo) / 255 (1 when hi == lo), zp = rint(clamp(0 - lo / scale, 0, 255)),
 * y = clamp(rint(x / scale), -zp, 255 - zp) + zp (round half to even: rintf in the default mode). The
 * min / max reduction is exact in any order, so the result does not depend on the thread count. */
static void lw_dynamic_quantize(int nt, const float *x, long n, uint8_t *y, float *scale_out, uint8_t *zp_out) {
    float lo = 0.0f, hi = 0.0f;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : lo) reduction(max : hi) \
    if (nt > 1 && n > 65536)
    for (long i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    const float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
    float z = 0.0f - lo / scale;
    z = z < 0.0f ? 0.0f : z;
    z = z > 255.0f ? 255.0f : z;
    z = __builtin_rintf(z);
    const int32_t zp = (int32_t)z;
    const float qlo = (float)(0 - zp), qhi = (float)(255 - zp);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n > 65536)
    for (long i = 0; i < n; i++) {
        float v = __builtin_rintf(x[i] / scale);
        v = v < qlo ? qlo : v;
        v = v > qhi ? qhi : v;
        v = v == v ? v : qlo;
        y[i] = (uint8_t)((int32_t)v + zp);
    }
    *scale_out = scale;
    *zp_out = (uint8_t)zp;
}
