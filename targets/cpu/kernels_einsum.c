/* kernels_einsum.c: Einsum (cpu target; lowering in emit_einsum.py, semantics in
 * lowering/reference/ops_einsum.py).
 *
 * The general contraction: every output element is a sum, over the summed labels' index space, of the
 * product of one element of each operand. Each operand is addressed by one element stride per label (the
 * sum of its dimensions' strides when a label repeats in it: a diagonal; 0 where it broadcasts), so
 * transposes, diagonals, broadcasts, reductions and products of any number of operands are one loop
 * nest; an odometer over the summed labels updates every operand's offset by adding strides. Products and
 * sums are in double, rounded once. Output elements run in parallel. (No GEMM blocking: an Einsum that is
 * a large matrix product is better rewritten to MatMul.)
 */

#define LW_EINSUM_OPS 8
#define LW_EINSUM_LABELS 16

typedef struct {
    int nops, nout, nsum;
    long out_size[LW_EINSUM_LABELS], sum_size[LW_EINSUM_LABELS];
    long out_stride[LW_EINSUM_OPS][LW_EINSUM_LABELS], sum_stride[LW_EINSUM_OPS][LW_EINSUM_LABELS];
} lw_einsum_geom;

static void lw_einsum(int nt, const lw_einsum_geom *g, const float *const *x, float *y, long out_count,
                      long sum_count) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && out_count * sum_count > 32768)
    for (long o = 0; o < out_count; o++) {
        long off[LW_EINSUM_OPS] = {0}, idx[LW_EINSUM_LABELS] = {0};
        long rem = o;
        for (int l = g->nout - 1; l >= 0; l--) {
            const long c = rem % g->out_size[l];
            rem /= g->out_size[l];
            for (int k = 0; k < g->nops; k++) off[k] += c * g->out_stride[k][l];
        }
        double acc = 0.0;
        for (long s = 0; s < sum_count; s++) {
            double p = 1.0;
            for (int k = 0; k < g->nops; k++) p *= (double)x[k][off[k]];
            acc += p;
            for (int l = g->nsum - 1; l >= 0; l--) {
                idx[l]++;
                for (int k = 0; k < g->nops; k++) off[k] += g->sum_stride[k][l];
                if (idx[l] < g->sum_size[l]) break;
                for (int k = 0; k < g->nops; k++) off[k] -= g->sum_stride[k][l] * g->sum_size[l];
                idx[l] = 0;
            }
        }
        y[o] = (float)acc;
    }
}
