// Fully connected layer (PyTorch's Linear): forward with bias and
// activation fused, gradient of the input, gradients of the weights and
// bias. Mirrors lenet-core's linear module. The three products are
// register-tiled GEMMs (gemm.cuh): grid = tiles of the output,
// ceil(rows / 64) * ceil(cols / 64) blocks, tile b at row block
// b / ceil(cols / 64), column block b % ceil(cols / 64).
#include "gemm.cuh"

// Y = act(X W^T + b): rows n of the batch, columns o, depth F_IN.
// y[n][o] = act(b[o] + sum_i x[n][i] * w[o][i])
extern "C" __global__ void linear_forward(const LinearArgs a) {
    GemmPlace g = gemm_place(a.f_out);
    MatrixStager<true> x = {a.x, a.f_in, g.m0, a.n, a.f_in};
    MatrixStager<true> w = {a.w, a.f_in, g.n0, a.f_out, a.f_in};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(x, w, a.f_in, acc);
    for (int i = 0; i < GEMM_TM; i++) {
        for (int j = 0; j < GEMM_TN; j++) {
            int r = g.r + i, c = g.c + j;
            if (r < a.n && c < a.f_out) {
                a.y[(size_t)r * a.f_out + c] = act_apply(a.act, acc[i][j] + a.b[c]);
            }
        }
    }
}

// dX = (dY W) * act'(x): rows n, columns i, depth F_OUT. Writes dx.
// dx[n][i] = act'(x[n][i]) * sum_o dy[n][o] * w[o][i]
extern "C" __global__ void linear_backward_input(const LinearArgs a) {
    GemmPlace g = gemm_place(a.f_in);
    MatrixStager<true> dy = {a.dy, a.f_out, g.m0, a.n, a.f_out};
    MatrixStager<false> w = {a.w, a.f_in, g.n0, a.f_in, a.f_out};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(dy, w, a.f_out, acc);
    for (int i = 0; i < GEMM_TM; i++) {
        for (int j = 0; j < GEMM_TN; j++) {
            int r = g.r + i, c = g.c + j;
            if (r < a.n && c < a.f_in) {
                size_t at = (size_t)r * a.f_in + c;
                a.dx[at] = acc[i][j] * act_grad(a.act, a.x[at]);
            }
        }
    }
}

// dW = dY^T X: rows o, columns i, depth N (the batch, summed in order
// n = 0..N-1); then ceil(F_OUT / 256) more blocks, one thread per bias:
// db[o] = sum_n dy[n][o] in the same order. Grid = tiles + those blocks.
// Writes dw and db.
extern "C" __global__ void linear_backward_weight(const LinearArgs a) {
    int tiles = (a.f_in + GEMM_BN - 1) / GEMM_BN;
    int weight_blocks = (a.f_out + GEMM_BM - 1) / GEMM_BM * tiles;
    int b = (int)blockIdx.x;
    if (b >= weight_blocks) {
        int o = (b - weight_blocks) * GEMM_THREADS + (int)threadIdx.x;
        if (o < a.f_out) {
            float acc = 0.0f;
            for (int n = 0; n < a.n; n++) {
                acc += a.dy[(size_t)n * a.f_out + o];
            }
            a.db[o] = acc;
        }
        return;
    }
    GemmPlace g = gemm_place(a.f_in);
    MatrixStager<false> dy = {a.dy, a.f_out, g.m0, a.f_out, a.n};
    MatrixStager<false> x = {a.x, a.f_in, g.n0, a.f_in, a.n};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(dy, x, a.n, acc);
    for (int i = 0; i < GEMM_TM; i++) {
        for (int j = 0; j < GEMM_TN; j++) {
            int r = g.r + i, c = g.c + j;
            if (r < a.f_out && c < a.f_in) {
                a.dw[(size_t)r * a.f_in + c] = acc[i][j];
            }
        }
    }
}
