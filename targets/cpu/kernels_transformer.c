/* kernels_transformer.c: layer normalisation, GELU and fused attention (cpu target). */
