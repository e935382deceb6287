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
    GemmOperand x = {a.x, a.f_in};
    GemmOperand w = {a.w, a.f_in};
    int tiles = gemm_tiles_n(a.f_out);
    int m0 = (int)blockIdx.x / tiles * GEMM_BM;
    int n0 = (int)blockIdx.x % tiles * GEMM_BN;
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile<true, true>(x, w, a.n, a.f_out, a.f_in, m0, n0, acc);
    int t = (int)threadIdx.x;
    for (int i = 0; i < GEMM_TM; i++) {
        int r = m0 + t / (GEMM_BN / GEMM_TN) * GEMM_TM + i;
        for (int j = 0; j < GEMM_TN; j++) {
            int c = n0 + t % (GEMM_BN / GEMM_TN) * GEMM_TN + j;
            if (r < a.n && c < a.f_out) {
                a.y[(size_t)r * a.f_out + c] = act_apply(a.act, acc[i][j] + a.b[c]);
            }
        }
    }
}

// dX = (dY W) * act'(x): rows n, columns i, depth F_OUT. Writes dx.
// dx[n][i] = act'(x[n][i]) * sum_o dy[n][o] * w[o][i]
extern "C" __global__ void linear_backward_input(const LinearArgs a) {
    GemmOperand dy = {a.dy, a.f_out};
    GemmOperand w = {a.w, a.f_in};
    int tiles = gemm_tiles_n(a.f_in);
    int m0 = (int)blockIdx.x / tiles * GEMM_BM;
    int n0 = (int)blockIdx.x % tiles * GEMM_BN;
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile<true, false>(dy, w, a.n, a.f_in, a.f_out, m0, n0, acc);
    int t = (int)threadIdx.x;
    for (int i = 0; i < GEMM_TM; i++) {
        int r = m0 + t / (GEMM_BN / GEMM_TN) * GEMM_TM + i;
        for (int j = 0; j < GEMM_TN; j++) {
            int c = n0 + t % (GEMM_BN / GEMM_TN) * GEMM_TN + j;
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
    int tiles = gemm_tiles_n(a.f_in);
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
    GemmOperand dy = {a.dy, a.f_out};
    GemmOperand x = {a.x, a.f_in};
    int m0 = b / tiles * GEMM_BM;
    int n0 = b % tiles * GEMM_BN;
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile<false, false>(dy, x, a.f_out, a.f_in, a.n, m0, n0, acc);
    int t = (int)threadIdx.x;
    for (int i = 0; i < GEMM_TM; i++) {
        int r = m0 + t / (GEMM_BN / GEMM_TN) * GEMM_TM + i;
        for (int j = 0; j < GEMM_TN; j++) {
            int c = n0 + t % (GEMM_BN / GEMM_TN) * GEMM_TN + j;
            if (r < a.f_out && c < a.f_in) {
                a.dw[(size_t)r * a.f_in + c] = acc[i][j];
            }
        }
    }
}
