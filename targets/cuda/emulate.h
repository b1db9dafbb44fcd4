/* emulate.h: compile the cuda target's kernels.cu as host C++ (g++), for tests without a GPU.
 *
 * The CUDA keywords are defined away and the device math functions are the host's libm. emulate.py
 * generates one launch wrapper per kernel that calls lw_emu_launch, which runs a launch in one of two ways:
 *
 * - Thread-independent kernels (no __syncthreads in their body): every thread of every block runs to
 *   completion one after another, blockIdx / threadIdx (and blockDim / gridDim) set before each call.
 * - Block-cooperative kernels (__shared__ arrays, __syncthreads): a block's threads run as cooperative
 *   fibers (ucontext), one stack each (with a PROT_NONE guard page below it). A thread runs until it
 *   reaches a __syncthreads or returns, then the next thread runs; when every thread of the block waits at
 *   the same barrier, all of them are resumed, so no thread passes a barrier before every thread has
 *   reached it, as on the GPU. Blocks run one after another, so a __shared__ array is a function-static
 *   array: one instance per block at a time, filled with NaN bytes at the start of every block (a read of
 *   shared memory no thread of the block wrote gives NaN, not a previous block's value). A barrier that only some threads of a block reach (others returned, or wait at a
 *   different __syncthreads) is a divergent barrier, undefined behaviour on the GPU: the launch stops and
 *   reports it, naming the kernel, the block and the barrier's line in kernels.cu.
 *
 * Host-only: nvcc never sees this file.
 */
#ifndef LW_EMULATE_H
#define LW_EMULATE_H

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

struct lw_dim3 {
    unsigned int x, y, z;
};

static lw_dim3 blockIdx, threadIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __constant__ static const
#define __launch_bounds__(...)
/* One instance for all blocks (blocks never run concurrently in the emulator), in a section of its own
 * that is filled with 0xFF bytes (NaN floats) before every block, as shared memory starts as garbage. */
#define __shared__ static __attribute__((section("lw_emu_shared")))
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() lw_emu_barrier(__LINE__)

static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* ---- the launch machinery ---- */

#define LW_EMU_STACK (128 * 1024)

enum { LW_EMU_READY = 0, LW_EMU_WAITING = 1, LW_EMU_DONE = 2 };

struct lw_emu_fiber {
    ucontext_t ctx;
    int state;
    int line; /* the __syncthreads it waits at */
};

static void **lw_emu_params;                /* the launch's kernel parameters (cuLaunchKernel layout) */
static void (*lw_emu_body)(void);           /* calls the kernel with lw_emu_params */
static ucontext_t lw_emu_scheduler;
static lw_emu_fiber *lw_emu_fibers;
static unsigned lw_emu_current;
static int lw_emu_cooperative;
static int lw_emu_failed;
static char lw_emu_error[512];

extern "C" const char *lw_emu_error_text(void) { return lw_emu_error; }

/* the linker's bounds of the section of all __shared__ arrays (null without any) */
extern char __start_lw_emu_shared[] __attribute__((weak, visibility("hidden")));
extern char __stop_lw_emu_shared[] __attribute__((weak, visibility("hidden")));

static inline void lw_emu_poison_shared(void) {
    char *start = __start_lw_emu_shared, *stop = __stop_lw_emu_shared;
    if (start && stop > start) memset(start, 0xFF, (size_t)(stop - start));
}

static inline void lw_emu_barrier(int line) {
    if (!lw_emu_cooperative) { /* the wrappers run every kernel with a __syncthreads cooperatively */
        if (!lw_emu_failed)
            snprintf(lw_emu_error, sizeof lw_emu_error, "__syncthreads() (kernels.cu line %d) in a kernel "
                     "the emulator runs thread by thread", line);
        lw_emu_failed = 1;
        return;
    }
    lw_emu_fiber *f = &lw_emu_fibers[lw_emu_current];
    f->state = LW_EMU_WAITING;
    f->line = line;
    swapcontext(&f->ctx, &lw_emu_scheduler);
}

static void lw_emu_fiber_entry(void) {
    lw_emu_body();
    lw_emu_fibers[lw_emu_current].state = LW_EMU_DONE;
    /* returning resumes uc_link: the scheduler */
}

static inline void lw_emu_set_thread(unsigned t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = t / blockDim.x % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

/* Run one block as fibers; 0, or -1 with lw_emu_error set. */
static int lw_emu_run_block(const char *name, unsigned threads, char *stacks, size_t slot, size_t page) {
    lw_emu_poison_shared();
    for (unsigned t = 0; t < threads; t++) {
        lw_emu_fiber *f = &lw_emu_fibers[t];
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = stacks + t * slot + page;
        f->ctx.uc_stack.ss_size = slot - page;
        f->ctx.uc_link = &lw_emu_scheduler;
        makecontext(&f->ctx, lw_emu_fiber_entry, 0);
        f->state = LW_EMU_READY;
        f->line = 0;
    }
    for (;;) {
        for (unsigned t = 0; t < threads; t++) {
            if (lw_emu_fibers[t].state == LW_EMU_DONE) continue;
            lw_emu_fibers[t].state = LW_EMU_READY;
            lw_emu_current = t;
            lw_emu_set_thread(t);
            swapcontext(&lw_emu_scheduler, &lw_emu_fibers[t].ctx);
        }
        unsigned waiting = 0, first = 0;
        for (unsigned t = 0; t < threads; t++) {
            if (lw_emu_fibers[t].state != LW_EMU_WAITING) continue;
            if (waiting++ == 0) first = t;
        }
        if (waiting == 0) return 0; /* every thread returned */
        int line = lw_emu_fibers[first].line;
        for (unsigned t = 0; t < threads; t++) {
            const lw_emu_fiber *f = &lw_emu_fibers[t];
            if (f->state == LW_EMU_WAITING && f->line == line) continue;
            lw_emu_set_thread(t);
            if (f->state == LW_EMU_DONE)
                snprintf(lw_emu_error, sizeof lw_emu_error, "%s: divergent __syncthreads() in block "
                         "(%u, %u, %u): %u of its %u threads wait at kernels.cu line %d, thread (%u, %u, %u) "
                         "returned without reaching it", name, blockIdx.x, blockIdx.y, blockIdx.z, waiting,
                         threads, line, threadIdx.x, threadIdx.y, threadIdx.z);
            else
                snprintf(lw_emu_error, sizeof lw_emu_error, "%s: divergent __syncthreads() in block "
                         "(%u, %u, %u): thread (%u, %u, %u) waits at kernels.cu line %d, other threads at "
                         "line %d", name, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
                         threadIdx.z, f->line, line);
            return -1;
        }
    }
}

static int lw_emu_launch(const char *name, void **params, const unsigned *grid, const unsigned *block,
                         void (*body)(void), int cooperative) {
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    lw_emu_params = params;
    lw_emu_body = body;
    lw_emu_failed = 0;
    lw_emu_error[0] = 0;
    lw_emu_cooperative = cooperative;
    if (!cooperative) {
        for (unsigned bz = 0; bz < grid[2]; bz++)
        for (unsigned by = 0; by < grid[1]; by++)
        for (unsigned bx = 0; bx < grid[0]; bx++) {
            blockIdx = {bx, by, bz};
            for (unsigned tz = 0; tz < block[2]; tz++)
            for (unsigned ty = 0; ty < block[1]; ty++)
            for (unsigned tx = 0; tx < block[0]; tx++) {
                threadIdx = {tx, ty, tz};
                body();
            }
        }
        return lw_emu_failed ? -1 : 0;
    }
    const unsigned threads = block[0] * block[1] * block[2];
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t slot = LW_EMU_STACK + page;
    char *stacks = (char *)mmap(NULL, slot * threads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0);
    if (stacks == MAP_FAILED) {
        snprintf(lw_emu_error, sizeof lw_emu_error, "%s: cannot map %u fiber stacks", name, threads);
        return -1;
    }
    for (unsigned t = 0; t < threads; t++) mprotect(stacks + t * slot, page, PROT_NONE);
    static lw_emu_fiber fibers[1024]; /* the driver refuses blocks of more threads */
    if (threads > 1024) {
        snprintf(lw_emu_error, sizeof lw_emu_error, "%s: a block of %u threads", name, threads);
        munmap(stacks, slot * threads);
        return -1;
    }
    lw_emu_fibers = fibers;
    int rc = 0;
    for (unsigned bz = 0; bz < grid[2] && rc == 0; bz++)
    for (unsigned by = 0; by < grid[1] && rc == 0; by++)
    for (unsigned bx = 0; bx < grid[0] && rc == 0; bx++) {
        blockIdx = {bx, by, bz};
        rc = lw_emu_run_block(name, threads, stacks, slot, page);
    }
    munmap(stacks, slot * threads);
    lw_emu_fibers = NULL;
    lw_emu_cooperative = 0;
    return rc;
}

#endif
