/* kernels_common.cuh: the start of every generated kernels.cu (cuda target).
 *
 * Self-contained device code: no #include, so the same text compiles with nvcc (or NVRTC) and, through
 * emulate.h, as host C++ with g++ (the emulator tests run every kernel that way). Everything here is a
 * __device__ helper; the generator appends one extern "C" __global__ kernel per computing node.
 *
 * Most kernels are thread-independent: each thread computes its own outputs from global memory and a
 * thread past the end of the work returns at once; the emulator runs those one thread after another. The
 * tiled SGEMM is block-cooperative (__shared__ tiles, __syncthreads): every thread of its block reaches
 * every barrier (no early return), and the emulator runs its threads as fibers meeting at each barrier.
 * No kernel uses warp shuffles (the emulator has no warps).
 */

#define LW_DEV __device__ __forceinline__
#if defined(__CUDACC__)
#define LW_UNROLL _Pragma("unroll")
#else
#define LW_UNROLL
#endif

LW_DEV float lw_inf() { return __int_as_float(0x7f800000); }

/* Activations of Conv/Gemm epilogues and of elementwise bodies: the same arithmetic as the cpu target's
 * kernels_common.h (its scalar forms), so the two targets agree to rounding. */
LW_DEV float lw_relu(float x) { return x < 0.0f ? 0.0f : x; }
LW_DEV float lw_leaky(float x, float a) { return x >= 0.0f ? x : x * a; }
LW_DEV float lw_clip(float x, float lo, float hi) {
    float t = x < lo ? lo : x;
    return t > hi ? hi : t;
}

/* expf (Cephes polynomial, about 1 ulp). */
LW_DEV float lw_expf(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.72283f ? 88.72283f : xc;
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    float scale = __int_as_float(((int)n + 126) << 23); /* 2^(n-1): n may be 128 */
    float y = p * scale * 2.0f;
    y = x > 88.72283f ? lw_inf() : y;
    y = x < -87.0f ? 0.0f : y;
    return x != x ? x : y;
}

LW_DEV float lw_sigmoid(float x) {
    float e = lw_expf(-fabsf(x)); /* never overflows */
    float pos = 1.0f / (1.0f + e);
    return x >= 0.0f ? pos : e / (1.0f + e);
}

/* tanhf and erff as rational minimax fits on a clamped argument (see the cpu target's kernels_common.h). */
LW_DEV float lw_tanhf(float x) {
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

LW_DEV float lw_erff(float x) {
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

/* ONNX Gelu: tanh_form 0 is the erf form, nonzero the tanh approximation (a literal at every call site). */
LW_DEV float lw_gelu(float x, float tanh_form) {
    if (tanh_form != 0.0f) return 0.5f * x * (1.0f + lw_tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    return 0.5f * x * (1.0f + lw_erff(x * 0.7071067811865476f));
}

/* Float Min/Max as ONNX Runtime computes them: a NaN operand gives NaN. */
LW_DEV float lw_maxf(float a, float b) { return a > b || a != a ? a : b; }
LW_DEV float lw_minf(float a, float b) { return a < b || a != a ? a : b; }
/* ONNX Sign: -1, 0 or 1; NaN stays NaN and zeros keep their sign. */
LW_DEV float lw_signf(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; }
/* powf(x, 0.5f) without powf: sqrt, except powf's +0 for -0 and +inf for -inf. */
LW_DEV float lw_pow_half(float x) { return x == -lw_inf() ? lw_inf() : sqrtf(x) + 0.0f; }

/* The global index of this thread along x (1-D launches; the generator keeps every index below 2^31). */
LW_DEV int lw_global_x() { return (int)(blockIdx.x * blockDim.x + threadIdx.x); }
