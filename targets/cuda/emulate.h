/* emulate.h: compile the cuda target's kernels.cu as host C++ (g++), for tests without a GPU.
 *
 * The generated kernels are thread-independent (no shared memory, barriers or warp shuffles), so a launch
 * is emulated exactly by running every thread of every block one after another: the driver emulate.py
 * generates sets blockIdx / threadIdx (and blockDim / gridDim) before each call. The CUDA keywords are
 * defined away and the device math functions are the host's libm.
 */
#ifndef LW_EMULATE_H
#define LW_EMULATE_H

#include <math.h>
#include <string.h>

struct lw_dim3 {
    unsigned int x, y, z;
};

static lw_dim3 blockIdx, threadIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __constant__ static const
#define __launch_bounds__(...)

static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

#endif
