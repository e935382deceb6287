// Fully connected layer (PyTorch's Linear): forward with bias and
// activation fused, gradient of the input, gradients of the weights and
// bias. Mirrors lenet-core's linear module. The three products are
// register-tiled GEMMs (gemm.cuh), each in two tile configurations: the
// plain names take 64 x 64 tiles (GemmSmall), the `_large` ones 128 x 128
// (GemmLarge); the schedule picks one by the product's shape. Grid = tiles
// of the output, ceil(rows / BM) * ceil(cols / BN) blocks, tile b at row
// block b / ceil(cols / BN), column block b % ceil(cols / BN).
#include "gemm.cuh"

// Y = act(X W^T + b): rows n of the batch, columns o, depth F_IN.
// y[n][o] = act(b[o] + sum_i x[n][i] * w[o][i])
template <class C>
__device__ __forceinline__ void linear_forward_tiled(const LinearArgs& a) {
    GemmPlace<C> g((int)blockIdx.x, a.f_out);
    MatrixStager<C, true> x;
    x.init(a.x, a.f_in, g.m0, a.n, a.f_in);
    MatrixStager<C, true> w;
    w.init(a.w, a.f_in, g.n0, a.f_out, a.f_in);
    float acc[C::TM][C::TN];
    gemm_tile<C>(x, w, a.f_in, acc);
    #pragma unroll
    for (int i = 0; i < C::TM; i++) {
        #pragma unroll
        for (int j = 0; j < C::TN; j++) {
            int r = g.row(i), c = g.col(j);
            if (r < a.n && c < a.f_out) {
                a.y[(size_t)r * a.f_out + c] = act_apply_outlined(a.act, acc[i][j] + a.b[c]);
            }
        }
    }
}

// dX = (dY W) * act'(x): rows n, columns i, depth F_OUT. Writes dx.
// dx[n][i] = act'(x[n][i]) * sum_o dy[n][o] * w[o][i]
template <class C>
__device__ __forceinline__ void linear_backward_input_tiled(const LinearArgs& a) {
    GemmPlace<C> g((int)blockIdx.x, a.f_in);
    MatrixStager<C, true> dy;
    dy.init(a.dy, a.f_out, g.m0, a.n, a.f_out);
    MatrixStager<C, false> w;
    w.init(a.w, a.f_in, g.n0, a.f_in, a.f_out);
    float acc[C::TM][C::TN];
    gemm_tile<C>(dy, w, a.f_out, acc);
    #pragma unroll
    for (int i = 0; i < C::TM; i++) {
        #pragma unroll
        for (int j = 0; j < C::TN; j++) {
            int r = g.row(i), c = g.col(j);
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
template <class C>
__device__ __forceinline__ void linear_backward_weight_tiled(const LinearArgs& a) {
    int tiles = (a.f_in + C::BN - 1) / C::BN;
    int weight_blocks = (a.f_out + C::BM - 1) / C::BM * tiles;
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
    GemmPlace<C> g(b, a.f_in);
    MatrixStager<C, false> dy;
    dy.init(a.dy, a.f_out, g.m0, a.f_out, a.n);
    MatrixStager<C, false> x;
    x.init(a.x, a.f_in, g.n0, a.f_in, a.n);
    float acc[C::TM][C::TN];
    gemm_tile<C>(dy, x, a.n, acc);
    #pragma unroll
    for (int i = 0; i < C::TM; i++) {
        #pragma unroll
        for (int j = 0; j < C::TN; j++) {
            int r = g.row(i), c = g.col(j);
            if (r < a.f_out && c < a.f_in) {
                a.dw[(size_t)r * a.f_in + c] = acc[i][j];
            }
        }
    }
}

extern "C" __global__ void linear_forward(const LinearArgs a) {
    linear_forward_tiled<GemmSmall>(a);
}
extern "C" __global__ void linear_forward_large(const LinearArgs a) {
    linear_forward_tiled<GemmLarge>(a);
}
extern "C" __global__ void linear_backward_input(const LinearArgs a) {
    linear_backward_input_tiled<GemmSmall>(a);
}
extern "C" __global__ void linear_backward_input_large(const LinearArgs a) {
    linear_backward_input_tiled<GemmLarge>(a);
}
extern "C" __global__ void linear_backward_weight(const LinearArgs a) {
    linear_backward_weight_tiled<GemmSmall>(a);
}
extern "C" __global__ void linear_backward_weight_large(const LinearArgs a) {
    linear_backward_weight_tiled<GemmLarge>(a);
}
