/* kernels_common.h: the start of every generated model.c (cpu target).
 *
 * The generator defines LW_MR, LW_NR, LW_VEC, LW_KC, LW_MC and LW_NC before this text; the weights it
 * prepacks use the same panel sizes. Everything here is static: the only exported symbols are the lw_*
 * ABI functions the generator appends.
 */
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(LW_MR) || !defined(LW_NR) || !defined(LW_VEC) || !defined(LW_KC) || !defined(LW_MC) \
    || !defined(LW_NC)
#error "the generator must define LW_MR, LW_NR, LW_VEC, LW_KC, LW_MC and LW_NC"
#endif
#if LW_MR < 4
#error "LW_MR must be at least 4"
#endif
#if LW_NR % LW_VEC != 0
#error "LW_NR must be a multiple of LW_VEC"
#endif

#pragma GCC diagnostic ignored "-Wunused-function" /* kernels a model does not use are dropped */

#define LW_EXPORT __attribute__((visibility("default")))
#define LW_NV (LW_NR / LW_VEC)
#define LW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LW_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LW_CDIV(a, b) (((a) + (b) - 1) / (b))

/* A SIMD vector of LW_VEC floats; gcc lowers it to the widest registers the -march level has. */
typedef float lw_vf __attribute__((vector_size(LW_VEC * 4)));
typedef int lw_vi __attribute__((vector_size(LW_VEC * 4)));

static inline lw_vf lw_load(const float *p) { lw_vf v; memcpy(&v, p, sizeof v); return v; }
static inline void lw_store(float *p, lw_vf v) { memcpy(p, &v, sizeof v); }
/* Deinterleave the 2 * LW_VEC floats at p: keep the even ones (lw_load_even) or the odd ones
 * (lw_load_odd), the two phases of a stride-2 window. */
#if LW_VEC == 16
#define LW_EVEN_INDICES 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define LW_ODD_INDICES 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#elif LW_VEC == 8
#define LW_EVEN_INDICES 0, 2, 4, 6, 8, 10, 12, 14
#define LW_ODD_INDICES 1, 3, 5, 7, 9, 11, 13, 15
#else
#define LW_EVEN_INDICES 0, 2, 4, 6
#define LW_ODD_INDICES 1, 3, 5, 7
#endif
#if defined(__clang__)
#define LW_SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define LW_SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, (lw_vi){__VA_ARGS__})
#endif
static inline lw_vf lw_load_even(const float *p) {
    return LW_SHUFFLE2(lw_load(p), lw_load(p + LW_VEC), LW_EVEN_INDICES);
}
static inline lw_vf lw_load_odd(const float *p) {
    return LW_SHUFFLE2(lw_load(p), lw_load(p + LW_VEC), LW_ODD_INDICES);
}

/* Lane-wise mask ? a : b (mask lanes all ones or zeros, from a vector comparison). */
static inline lw_vf lw_vselect(lw_vi mask, lw_vf a, lw_vf b) {
    return (lw_vf)(((lw_vi)a & mask) | ((lw_vi)b & ~mask));
}

/* Broadcast a scalar (x - 0 folds to a plain broadcast; x + 0 would not, because of -0.0). */
static inline lw_vf lw_splat(float x) { return x - (lw_vf){0}; }

/* Everything a node's kernel needs: caller buffers, the weights blob, the arena, the thread count and
 * lw_run's status (a kernel that meets an out-of-range index sets it to 3; lw_run returns it). */
typedef struct {
    const void *const *in;   /* graph inputs, in signature order */
    void *const *out;        /* graph outputs, in signature order */
    const unsigned char *w;  /* weights blob (64-byte aligned) */
    unsigned char *arena;    /* planned intermediates */
    unsigned char *ws;       /* scratch (im2col, packed operands), after the planned arena */
    int nt;                  /* OpenMP threads for every parallel region */
    int *status;             /* lw_run's result: 0, or nonzero once a kernel met an out-of-range index */
} lw_ctx;

/* Activations of Conv/Gemm epilogues and of elementwise bodies. */
enum { LW_ACT_NONE = 0, LW_ACT_RELU, LW_ACT_LEAKYRELU, LW_ACT_CLIP, LW_ACT_SIGMOID, LW_ACT_TANH, LW_ACT_GELU };

static inline float lw_relu(float x) { return x < 0.0f ? 0.0f : x; }
static inline float lw_leaky(float x, float a) { return x >= 0.0f ? x : x * a; }
static inline float lw_clip(float x, float lo, float hi) {
    float t = x < lo ? lo : x;
    return t > hi ? hi : t;
}
/* Branch-free expf (Cephes polynomial, about 1 ulp): inlined into loops, gcc vectorizes it (with
 * -fno-trapping-math), unlike libm's expf. */
static inline float lw_expf(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.72283f ? 88.72283f : xc;
    float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int bits = ((int)n + 126) << 23; /* 2^(n-1): n may be 128 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale * 2.0f;
    y = x > 88.72283f ? INFINITY : y;
    y = x < -87.0f ? 0.0f : y;
    return x != x ? x : y;
}

static inline float lw_sigmoid(float x) {
    float e = lw_expf(-fabsf(x)); /* never overflows */
    float pos = 1.0f / (1.0f + e);
    return x >= 0.0f ? pos : e / (1.0f + e);
}

/* Branch-free tanhf and erff: x P(x^2) / Q(x^2) on x clamped to [-9, 9] (tanh) or [-3.92, 3.92] (erf;
 * both are 1 to float precision beyond), P and Q of degree 5 in x^2 with positive coefficients (rational
 * minimax fits, made for this code), the result bounded to [-1, 1]: error below 3.5e-7, absolute and
 * relative, evaluated in float, with no exp and one division (the exp-based forms cost twice as much;
 * Abramowitz & Stegun 7.1.26, the previous erf, lost 1e-5 relative near 0 to cancellation). NaN
 * propagates; odd by construction.
 * lw_vtanhf and lw_verff below are the same arithmetic on vectors. */
static inline float lw_tanhf(float x) {
    float c = x > 9.0f ? 9.0f : x;
    c = c < -9.0f ? -9.0f : c;
    float z = c * c;
    float p = 3.653347763e-11f;
    p = p * z + 1.108095304e-07f;
    p = p * z + 4.220648043e-05f;
    p = p * z + 4.423272330e-03f;
    p = p * z + 1.409718543e-01f;
    p = p * z + 1.0f;
    float q = 2.938085109e-09f;
    q = q * z + 2.597744015e-06f;
    q = q * z + 5.003242986e-04f;
    q = q * z + 2.919166908e-02f;
    q = q * z + 4.743051827e-01f;
    q = q * z + 1.0f;
    float y = c * p / q;
    y = y > 1.0f ? 1.0f : y;
    return y < -1.0f ? -1.0f : y;
}

static inline float lw_erff(float x) {
    float c = x > 3.92f ? 3.92f : x;
    c = c < -3.92f ? -3.92f : c;
    float z = c * c;
    float p = 2.034701993e-06f;
    p = p * z + 2.874784986e-04f;
    p = p * z + 3.868370550e-03f;
    p = p * z + 5.306060985e-02f;
    p = p * z + 1.927653402e-01f;
    p = p * z + 1.128378987e+00f;
    float q = 3.807024768e-05f;
    q = q * z + 1.188122085e-03f;
    q = q * z + 1.517238468e-02f;
    q = q * z + 1.150851101e-01f;
    q = q * z + 5.041654706e-01f;
    q = q * z + 1.0f;
    float y = c * p / q;
    y = y > 1.0f ? 1.0f : y;
    return y < -1.0f ? -1.0f : y;
}

/* ONNX Gelu: tanh_form 0 is 0.5 x (1 + erf(x / sqrt 2)), nonzero the tanh approximation. The form is a
 * compile-time literal at every call site, so the branch folds away. */
static inline float lw_gelu(float x, float tanh_form) {
    if (tanh_form != 0.0f) return 0.5f * x * (1.0f + lw_tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    return 0.5f * x * (1.0f + lw_erff(x * 0.7071067811865476f));
}

/* Vector forms of the activations, on lw_vf registers (GEMM and convolution epilogues apply them to the
 * accumulators before the store, so an activation costs no pass over memory). The same arithmetic as the
 * scalar forms above, except that the vector exp rounds n to nearest even instead of floor(t + 0.5) (a
 * difference only at exact ties, and then of about 1 ulp). */
static inline lw_vf lw_vabs(lw_vf x) { return (lw_vf)((lw_vi)x & ~(lw_vi)lw_splat(-0.0f)); }
/* a < b ? a : b and a > b ? a : b lane-wise (x86 minps/maxps semantics: b when either is NaN, so a
 * constant bound goes first to let NaN through). One instruction where the ISA level has it. */
#if LW_VEC == 16 && defined(__AVX512F__)
#include <immintrin.h>
static inline lw_vf lw_vmin(lw_vf a, lw_vf b) { return (lw_vf)_mm512_min_ps((__m512)a, (__m512)b); }
static inline lw_vf lw_vmax(lw_vf a, lw_vf b) { return (lw_vf)_mm512_max_ps((__m512)a, (__m512)b); }
#elif LW_VEC == 8 && defined(__AVX__)
#include <immintrin.h>
static inline lw_vf lw_vmin(lw_vf a, lw_vf b) { return (lw_vf)_mm256_min_ps((__m256)a, (__m256)b); }
static inline lw_vf lw_vmax(lw_vf a, lw_vf b) { return (lw_vf)_mm256_max_ps((__m256)a, (__m256)b); }
#elif LW_VEC == 4 && defined(__SSE__)
#include <immintrin.h>
static inline lw_vf lw_vmin(lw_vf a, lw_vf b) { return (lw_vf)_mm_min_ps((__m128)a, (__m128)b); }
static inline lw_vf lw_vmax(lw_vf a, lw_vf b) { return (lw_vf)_mm_max_ps((__m128)a, (__m128)b); }
#else
static inline lw_vf lw_vmin(lw_vf a, lw_vf b) { return lw_vselect(a < b, a, b); }
static inline lw_vf lw_vmax(lw_vf a, lw_vf b) { return lw_vselect(a > b, a, b); }
#endif

static inline lw_vf lw_vexpf(lw_vf x) {
    const lw_vf round = lw_splat(12582912.0f); /* 1.5 * 2^23: (t + round) - round is t rounded */
    lw_vf xc = lw_vmin(lw_splat(88.72283f), lw_vmax(lw_splat(-87.0f), x)); /* NaN: handled below */
    lw_vf n = (xc * lw_splat(1.44269504088896341f) + round) - round;
    lw_vf r = xc - n * lw_splat(0.693359375f) + n * lw_splat(2.12194440e-4f);
    lw_vf p = lw_splat(1.9875691500e-4f);
    p = p * r + lw_splat(1.3981999507e-3f);
    p = p * r + lw_splat(8.3334519073e-3f);
    p = p * r + lw_splat(4.1665795894e-2f);
    p = p * r + lw_splat(1.6666665459e-1f);
    p = p * r + lw_splat(5.0000001201e-1f);
    p = p * r * r + r + lw_splat(1.0f);
    lw_vi bits = (__builtin_convertvector(n, lw_vi) + 126) << 23; /* 2^(n-1): n may be 128 */
    lw_vf y = p * (lw_vf)bits * lw_splat(2.0f);
    y = lw_vselect(x > lw_splat(88.72283f), lw_splat(INFINITY), y);
    y = lw_vselect(x < lw_splat(-87.0f), (lw_vf){0}, y);
    return lw_vselect(x != x, x, y);
}

static inline lw_vf lw_vsigmoid(lw_vf x) {
    lw_vf e = lw_vexpf(-lw_vabs(x));
    return lw_vselect(x >= (lw_vf){0}, lw_splat(1.0f), e) / (lw_splat(1.0f) + e);
}

static inline lw_vf lw_vtanhf(lw_vf x) {
    lw_vf c = lw_vmax(lw_splat(-9.0f), lw_vmin(lw_splat(9.0f), x));
    lw_vf z = c * c;
    lw_vf p = lw_splat(3.653347763e-11f);
    p = p * z + lw_splat(1.108095304e-07f);
    p = p * z + lw_splat(4.220648043e-05f);
    p = p * z + lw_splat(4.423272330e-03f);
    p = p * z + lw_splat(1.409718543e-01f);
    p = p * z + lw_splat(1.0f);
    lw_vf q = lw_splat(2.938085109e-09f);
    q = q * z + lw_splat(2.597744015e-06f);
    q = q * z + lw_splat(5.003242986e-04f);
    q = q * z + lw_splat(2.919166908e-02f);
    q = q * z + lw_splat(4.743051827e-01f);
    q = q * z + lw_splat(1.0f);
    return lw_vmax(lw_splat(-1.0f), lw_vmin(lw_splat(1.0f), c * p / q));
}

static inline lw_vf lw_verff(lw_vf x) {
    lw_vf c = lw_vmax(lw_splat(-3.92f), lw_vmin(lw_splat(3.92f), x));
    lw_vf z = c * c;
    lw_vf p = lw_splat(2.034701993e-06f);
    p = p * z + lw_splat(2.874784986e-04f);
    p = p * z + lw_splat(3.868370550e-03f);
    p = p * z + lw_splat(5.306060985e-02f);
    p = p * z + lw_splat(1.927653402e-01f);
    p = p * z + lw_splat(1.128378987e+00f);
    lw_vf q = lw_splat(3.807024768e-05f);
    q = q * z + lw_splat(1.188122085e-03f);
    q = q * z + lw_splat(1.517238468e-02f);
    q = q * z + lw_splat(1.150851101e-01f);
    q = q * z + lw_splat(5.041654706e-01f);
    q = q * z + lw_splat(1.0f);
    return lw_vmax(lw_splat(-1.0f), lw_vmin(lw_splat(1.0f), c * p / q));
}

static inline lw_vf lw_vgelu(lw_vf x, float tanh_form) {
    if (tanh_form != 0.0f) {
        lw_vf u = lw_splat(0.7978845608028654f) * (x + lw_splat(0.044715f) * x * x * x);
        return lw_splat(0.5f) * x * (lw_splat(1.0f) + lw_vtanhf(u));
    }
    return lw_splat(0.5f) * x * (lw_splat(1.0f) + lw_verff(x * lw_splat(0.7071067811865476f)));
}

/* One vector through an epilogue activation. */
static inline lw_vf lw_vactivate(lw_vf t, int act, float p0, float p1) {
    const lw_vf zero = (lw_vf){0};
    switch (act) {
    case LW_ACT_RELU: return lw_vselect(t < zero, zero, t);
    case LW_ACT_LEAKYRELU: return lw_vselect(t >= zero, t, t * lw_splat(p0));
    case LW_ACT_CLIP:
        t = lw_vselect(t < lw_splat(p0), lw_splat(p0), t);
        return lw_vselect(t > lw_splat(p1), lw_splat(p1), t);
    case LW_ACT_SIGMOID: return lw_vsigmoid(t);
    case LW_ACT_TANH: return lw_vtanhf(t);
    case LW_ACT_GELU: return lw_vgelu(t, p0);
    default: return t;
    }
}

/* Apply an activation to n contiguous floats: whole vectors through lw_vactivate, the tail through a
 * zero-padded vector, so every element gets the same arithmetic wherever it lies (a GEMM's full tiles apply
 * lw_vactivate in registers, its partial tiles come here). */
static void lw_activate(float *c, long n, int act, float p0, float p1) {
    if (act == LW_ACT_NONE) return;
    long j = 0;
    for (; j + LW_VEC <= n; j += LW_VEC) lw_store(c + j, lw_vactivate(lw_load(c + j), act, p0, p1));
    if (j < n) {
        float tail[LW_VEC] = {0};
        memcpy(tail, c + j, (size_t)(n - j) * sizeof(float));
        lw_store(tail, lw_vactivate(lw_load(tail), act, p0, p1));
        memcpy(c + j, tail, (size_t)(n - j) * sizeof(float));
    }
}

/* The epilogue of a GEMM or convolution: c = act(alpha * c + bias_scale * bias + res).
 * bias and res are addressed as [row * rs + col * cs] (a stride of 0 broadcasts); either may be NULL.
 * Rows are output channels for a convolution, rows of the output matrix for a GEMM. */
typedef struct {
    float alpha, bias_scale;
    long bias_rs, bias_cs, res_rs, res_cs;
    int act;
    float p0, p1;
} lw_epilogue;

/* Apply the epilogue to one row segment c[0..n) at (row, col0). */
static void lw_epilogue_row(const lw_epilogue *e, float *c, long n, long row, long col0,
                            const float *bias, const float *res) {
    if (e->alpha != 1.0f)
        for (long j = 0; j < n; j++) c[j] *= e->alpha;
    if (bias) {
        const float *b = bias + row * e->bias_rs + col0 * e->bias_cs;
        float s = e->bias_scale;
        if (e->bias_cs == 0) { float v = s * b[0]; for (long j = 0; j < n; j++) c[j] += v; }
        else if (s == 1.0f) for (long j = 0; j < n; j++) c[j] += b[j * e->bias_cs];
        else for (long j = 0; j < n; j++) c[j] += s * b[j * e->bias_cs];
    }
    if (res) {
        const float *r = res + row * e->res_rs + col0 * e->res_cs;
        if (e->res_cs == 0) { float v = r[0]; for (long j = 0; j < n; j++) c[j] += v; }
        else if (e->res_cs == 1) for (long j = 0; j < n; j++) c[j] += r[j];
        else for (long j = 0; j < n; j++) c[j] += r[j * e->res_cs];
    }
    lw_activate(c, n, e->act, e->p0, e->p1);
}

/* Float Min/Max as ONNX Runtime computes them: a NaN operand gives NaN (fmaxf would drop it). Selects, so
 * they vectorize. */
static inline float lw_maxf(float a, float b) { return a > b || a != a ? a : b; }
static inline float lw_minf(float a, float b) { return a < b || a != a ? a : b; }
/* ONNX Sign: -1, 0 or 1; NaN stays NaN and zeros keep their sign. */
static inline float lw_signf(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; }
/* powf(x, 0.5f) without powf: sqrt, except powf's +0 for -0 and +inf for -inf. */
static inline float lw_pow_half(float x) { return x == -INFINITY ? INFINITY : sqrtf(x) + 0.0f; }
/* ONNX integer Mod with fmod = 0: the remainder takes the divisor's sign; a zero divisor gives 0 instead of
 * trapping. A macro: it serves every integer type. */
#define lw_imod(a, b) \
    ((b) != 0 ? ((a) % (b) != 0 && (((a) % (b) < 0) != ((b) < 0)) ? (a) % (b) + (b) : (a) % (b)) : 0)

#include <float.h> /* DBL_MAX: a float64 Clip's absent bound */

/* ---- 16-bit floats and float64 elementwise helpers -------------------------------------------------------
 * float16 and bfloat16 tensors are stored as their 16-bit patterns (uint16_t) and computed in float: a
 * load widens (exact), a result is rounded to the 16-bit type with round-to-nearest-even, overflow to inf,
 * NaN kept NaN (quiet, sign and top payload bits kept, as numpy and ml_dtypes do). F16C does the float16
 * conversions when the ISA level has it (x86-64-v3 and up); the portable bit routines below give the same
 * bits otherwise. A double rounds to float16 directly (rounding through float first could round twice). */
static inline uint16_t lw_d2h(double d) {
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    const uint16_t sign = (uint16_t)((b >> 48) & 0x8000u);
    const uint64_t a = b & 0x7fffffffffffffffull;
    if (a >= 0x7ff0000000000000ull)  /* inf, or NaN (made quiet, top payload bits kept) */
        return sign | (a == 0x7ff0000000000000ull ? 0x7c00u : (uint16_t)(0x7e00u | ((a >> 42) & 0x3ffu)));
    const int e = (int)(a >> 52) - 1023;
    if (e < -25) return sign;  /* below half the smallest subnormal (2^-25 itself ties to even: 0) */
    if (e > 15) return sign | 0x7c00u;
    const uint64_t m = (a & 0xfffffffffffffull) | 0x10000000000000ull;
    const int shift = e >= -14 ? 42 : 42 + (-14 - e);
    uint64_t r = m >> shift;
    const uint64_t rem = m & ((1ull << shift) - 1), half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    /* normal: the implicit bit (0x400) is replaced by the exponent; a carry out of the mantissa bumps the
     * exponent, and past 0x7bff gives exactly inf (0x7c00) */
    const uint32_t bits = e >= -14 ? ((uint32_t)(e + 15) << 10) + (uint32_t)r - 0x400u : (uint32_t)r;
    return sign | (uint16_t)(bits >= 0x7c00u ? 0x7c00u : bits);
}
#if defined(__F16C__) && defined(__FLT16_MAX__) && !defined(__clang__)
/* gcc 12+: _Float16 conversions are F16C's vcvtph2ps / vcvtps2ph, and loops of them vectorize */
static inline float lw_h2f(uint16_t h) { _Float16 x; memcpy(&x, &h, sizeof x); return (float)x; }
static inline uint16_t lw_f2h(float f) {
    const _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, sizeof h);
    return h;
}
#elif defined(__F16C__)
#include <immintrin.h>
static inline float lw_h2f(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t lw_f2h(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#else
static inline float lw_h2f(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
    else if (e == 0) {
        const float v = (float)m * 0x1p-24f;  /* zero or subnormal: exact */
        return sign ? -v : v;
    } else bits = sign | ((e + 112u) << 23) | (m << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
static inline uint16_t lw_f2h(float f) { return lw_d2h((double)f); }
#endif
/* a float rounded to the nearest float16 (as a float): the result of a float16 op computed in float */
static inline float lw_hround(float f) { return lw_h2f(lw_f2h(f)); }
static inline float lw_bf2f(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
static inline uint16_t lw_f2bf(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);  /* quiet NaN */
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
static inline float lw_bfround(float f) { return lw_bf2f(lw_f2bf(f)); }
/* float64 versions of the float helpers above (double libm; NaN propagates through Min/Max) */
static inline double lw_maxd(double a, double b) { return a > b || a != a ? a : b; }
static inline double lw_mind(double a, double b) { return a < b || a != a ? a : b; }
static inline double lw_signd(double x) { return x > 0.0 ? 1.0 : x < 0.0 ? -1.0 : x; }
static inline double lw_clipd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }
static inline double lw_sigmoidd(double x) {
    return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}
static inline double lw_geld(double x, double tanh_form) {
    return tanh_form != 0.0 ? 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
                            : 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
}
static inline double lw_pow_halfd(double x) { return x == -INFINITY ? INFINITY : sqrt(x) + 0.0; }
/* ONNX Mod with fmod = 0 on floats (opset 28): the remainder takes the divisor's sign, numpy's np.mod
 * (a zero remainder is a zero of the divisor's sign; a zero divisor gives NaN) */
static inline double lw_fmod0d(double a, double b) {
    double m = fmod(a, b);
    if (b == 0.0) return m;
    if (m != 0.0) { if ((b < 0.0) != (m < 0.0)) m += b; }
    else m = copysign(0.0, b);
    return m;
}
static inline float lw_fmod0f(float a, float b) {
    float m = fmodf(a, b);
    if (b == 0.0f) return m;
    if (m != 0.0f) { if ((b < 0.0f) != (m < 0.0f)) m += b; }
    else m = copysignf(0.0f, b);
    return m;
}
