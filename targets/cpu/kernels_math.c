/* kernels_math.c: reductions and math helpers (cpu target). */
