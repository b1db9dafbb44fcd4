/* kernels_index.c: gather, slice, pad and other indexing kernels (cpu target). */
