// 2-D convolution (cross-correlation, PyTorch's Conv2d): forward with bias
// and activation fused, gradient of the input, gradients of the weights and
// bias. Mirrors lenet-core's conv::conv2d and its backward.
#include "gemm.cuh"

// One thread per output value (n, co, oy, ox); grid covers N * C_OUT * OH * OW.
// y = act(b[co] + sum_{ci,u,v} w[co][ci][u][v] * x[n][ci][oy*S + u - P][ox*S + v - P])
extern "C" __global__ void conv2d_forward(const ConvArgs a) {
    int i = global_index();
    if (i >= a.n * a.c_out * a.oh * a.ow) {
        return;
    }
    int ox = i % a.ow;
    int oy = (i / a.ow) % a.oh;
    int co = (i / (a.ow * a.oh)) % a.c_out;
    int n = i / (a.ow * a.oh * a.c_out);
    float acc = 0.0f;
    for (int ci = 0; ci < a.c_in; ci++) {
        gptr<const float> xp = a.x + ((size_t)n * a.c_in + ci) * a.h * a.w_in;
        gptr<const float> wp = a.w + ((size_t)co * a.c_in + ci) * a.k * a.k;
        for (int u = 0; u < a.k; u++) {
            int iy = oy * a.s + u - a.p;
            if (iy < 0 || iy >= a.h) {
                continue;
            }
            for (int v = 0; v < a.k; v++) {
                int ix = ox * a.s + v - a.p;
                if (ix < 0 || ix >= a.w_in) {
                    continue;
                }
                acc += wp[u * a.k + v] * xp[iy * a.w_in + ix];
            }
        }
    }
    a.y[i] = act_apply(a.act, acc + a.b[co]);
}

// The im2col operand of a convolution, staged without forming it: row r
// is output position (n, oy, ox) of the batch, k is tap (ci, u, v), and
// the element is x[n][ci][oy*S + u - P][ox*S + v - P] (0 in the padding).
// A shared table holds each tap of the coming slice of k as its offset
// (ci*H + u)*W + v in an image and its (u, v), computed by 16 threads
// while the block multiplies the current slice (two buffers, by the
// slice's parity). Each thread stages one row, decomposed once.
struct ConvTapsStager {
    gptr<const float> x;
    int h, w, k, depth;
    int valid;
    long long base;  // offset of (n, 0, oy*S - P, ox*S - P)
    int iy0, ix0;
    shared_array<int, 2 * GEMM_BK>* off;
    shared_array<int, 2 * GEMM_BK>* uv;

    __device__ __forceinline__ void stage(shared_array<float, GEMM_BK * GEMM_LD>& s, int k0) const {
        int t = (int)threadIdx.x;
        int buf = (k0 / GEMM_BK) & 1;
        int rr = t % GEMM_BM;
#pragma unroll
        for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
            int kk = t / GEMM_BM + q * (GEMM_THREADS / GEMM_BM);
            float v = 0.0f;
            if (valid && k0 + kk < depth) {
                int o = (*off)[buf * GEMM_BK + kk];
                int tap = (*uv)[buf * GEMM_BK + kk];
                int iy = iy0 + (tap >> 8);
                int ix = ix0 + (tap & 255);
                if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                    v = x[base + o];
                }
            }
            s[kk * GEMM_LD + rr] = v;
        }
    }
    __device__ __forceinline__ void next(int k1) const {
        int t = (int)threadIdx.x;
        if (t < GEMM_BK && k1 + t < depth) {
            int kidx = k1 + t;
            int ci = kidx / (k * k);
            int rem = kidx - ci * k * k;
            int u = rem / k;
            int v = rem - u * k;
            int buf = (k1 / GEMM_BK) & 1;
            (*off)[buf * GEMM_BK + t] = (ci * h + u) * w + v;
            (*uv)[buf * GEMM_BK + t] = u << 8 | v;
        }
    }
};

// The same output as conv2d_forward as a register-tiled GEMM (gemm.cuh):
// Y[co][(n, oy, ox)] = act(b[co] + sum_{(ci,u,v)} W[co][(ci,u,v)] *
// im2col[(ci,u,v)][(n, oy, ox)]), the taps summed in the order ci, u, v
// with one fused multiply-add each (the padding's terms add 0). Grid:
// ceil(C_OUT / 64) * ceil(N * OH * OW / 64) tiles. Chosen by the schedule
// for layers with many output channels, where its tiles are full.
extern "C" __global__ void conv2d_forward_gemm(const ConvArgs a) {
    __shared__ shared_array<int, 2 * GEMM_BK> off;
    __shared__ shared_array<int, 2 * GEMM_BK> uv;
    int ohw = a.oh * a.ow;
    int positions = a.n * ohw;
    int depth = a.c_in * a.k * a.k;
    GemmPlace g = gemm_place(positions);
    MatrixStager<true> w = {a.w, depth, g.m0, a.c_out, depth};
    int col = g.n0 + (int)threadIdx.x % GEMM_BN;
    int img = col / ohw;
    int oy = (col - img * ohw) / a.ow;
    int ox = col - img * ohw - oy * a.ow;
    ConvTapsStager x;
    x.x = a.x;
    x.h = a.h;
    x.w = a.w_in;
    x.k = a.k;
    x.depth = depth;
    x.valid = col < positions;
    x.iy0 = oy * a.s - a.p;
    x.ix0 = ox * a.s - a.p;
    x.base = (long long)img * a.c_in * a.h * a.w_in + (long long)x.iy0 * a.w_in + x.ix0;
    x.off = &off;
    x.uv = &uv;
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(w, x, depth, acc);
    for (int j = 0; j < GEMM_TN; j++) {
        int c = g.c + j;
        if (c >= positions) {
            continue;
        }
        int n = c / ohw;
        int pos = c - n * ohw;
        for (int i = 0; i < GEMM_TM; i++) {
            int co = g.r + i;
            if (co < a.c_out) {
                a.y[((size_t)n * a.c_out + co) * ohw + pos] = act_apply(a.act, acc[i][j] + a.b[co]);
            }
        }
    }
}

// One thread per input value (n, ci, iy, ix); grid covers N * C_IN * H * W.
// dx[n][ci][iy][ix] = act'(x) * sum_{co,u,v} w[co][ci][u][v] * dy[n][co][oy][ox]
// over the outputs with oy*S + u - P = iy and ox*S + v - P = ix.
// Writes dx (does not accumulate).
extern "C" __global__ void conv2d_backward_input(const ConvArgs a) {
    int i = global_index();
    if (i >= a.n * a.c_in * a.h * a.w_in) {
        return;
    }
    int ix = i % a.w_in;
    int iy = (i / a.w_in) % a.h;
    int ci = (i / (a.w_in * a.h)) % a.c_in;
    int n = i / (a.w_in * a.h * a.c_in);
    float acc = 0.0f;
    for (int co = 0; co < a.c_out; co++) {
        gptr<const float> dyp = a.dy + ((size_t)n * a.c_out + co) * a.oh * a.ow;
        gptr<const float> wp = a.w + ((size_t)co * a.c_in + ci) * a.k * a.k;
        for (int u = 0; u < a.k; u++) {
            int t = iy + a.p - u;
            if (t < 0 || (a.s != 1 && t % a.s != 0)) {
                continue;
            }
            int oy = a.s == 1 ? t : t / a.s;
            if (oy >= a.oh) {
                continue;
            }
            for (int v = 0; v < a.k; v++) {
                int r = ix + a.p - v;
                if (r < 0 || (a.s != 1 && r % a.s != 0)) {
                    continue;
                }
                int ox = a.s == 1 ? r : r / a.s;
                if (ox < a.ow) {
                    acc += wp[u * a.k + v] * dyp[oy * a.ow + ox];
                }
            }
        }
    }
    a.dx[i] = acc * act_grad(a.act, a.x[i]);
}

// One block of REDUCE_THREADS threads per kernel row (co, ci, u): its K
// weights dw[co][ci][u][0..K); then one block per bias co: grid =
// C_OUT * C_IN * K + C_OUT blocks. Thread t takes the output positions
// j = t, t + REDUCE_THREADS, ... of the flattened (n, oy, ox) (neighbouring
// threads read neighbouring dy and x: coalesced), keeps one partial sum per
// tap v in registers (dy is read once for the K taps, and the K x values
// of a position overlap its neighbours'), and block_sum's fixed tree adds
// the threads' shares of the K taps together. K <= CONV_KMAX.
// dw[co][ci][u][v] = sum_{n,oy,ox} dy[n][co][oy][ox] * x[n][ci][oy*S + u - P][ox*S + v - P]
// db[co] = sum_{n,oy,ox} dy[n][co][oy][ox]
// Writes dw and db (does not accumulate).
extern "C" __global__ void conv2d_backward_weight(const ConvArgs a) {
    __shared__ shared_array<float, REDUCE_THREADS> s;
    // (tap v, thread t) at v * REDUCE_THREADS + t
    __shared__ shared_array<float, CONV_KMAX * REDUCE_THREADS> sk;
    int rows = a.c_out * a.c_in * a.k;
    int b = (int)blockIdx.x;
    int plane = a.oh * a.ow;
    int total = a.n * plane;
    int t = (int)threadIdx.x;
    // (n, oy, ox) of position j = t, advanced by REDUCE_THREADS per step.
    int ox = t % a.ow;
    int oy = (t / a.ow) % a.oh;
    int n = t / plane;
    if (b < rows) {
        int u = b % a.k;
        int ci = (b / a.k) % a.c_in;
        int co = b / (a.k * a.c_in);
        float acc[CONV_KMAX];
        for (int v = 0; v < CONV_KMAX; v++) {
            acc[v] = 0.0f;
        }
        for (int j = t; j < total; j += REDUCE_THREADS) {
            int iy = oy * a.s + u - a.p;
            if (iy >= 0 && iy < a.h) {
                float g = a.dy[(((size_t)n * a.c_out + co) * a.oh + oy) * a.ow + ox];
                gptr<const float> xr = a.x + (((size_t)n * a.c_in + ci) * a.h + iy) * a.w_in;
                int ix0 = ox * a.s - a.p;
                for (int v = 0; v < CONV_KMAX; v++) {
                    int ix = ix0 + v;
                    if (v < a.k && ix >= 0 && ix < a.w_in) {
                        acc[v] += g * xr[ix];
                    }
                }
            }
            ox += REDUCE_THREADS;
            while (ox >= a.ow) {
                ox -= a.ow;
                oy++;
            }
            while (oy >= a.oh) {
                oy -= a.oh;
                n++;
            }
        }
        // block_sum's tree, for the K taps at once.
        for (int v = 0; v < CONV_KMAX; v++) {
            if (v < a.k) {
                sk[v * REDUCE_THREADS + t] = acc[v];
            }
        }
        __syncthreads();
        for (int half = REDUCE_THREADS / 2; half > 0; half >>= 1) {
            if (t < half) {
                for (int v = 0; v < CONV_KMAX; v++) {
                    if (v < a.k) {
                        sk[v * REDUCE_THREADS + t] += sk[v * REDUCE_THREADS + t + half];
                    }
                }
            }
            __syncthreads();
        }
        if (t < a.k) {
            a.dw[(size_t)b * a.k + t] = sk[t * REDUCE_THREADS];
        }
    } else {
        int co = b - rows;
        float acc = 0.0f;
        for (int j = t; j < total; j += REDUCE_THREADS) {
            acc += a.dy[(((size_t)n * a.c_out + co) * a.oh + oy) * a.ow + ox];
            ox += REDUCE_THREADS;
            while (ox >= a.ow) {
                ox -= a.ow;
                oy++;
            }
            while (oy >= a.oh) {
                oy -= a.oh;
                n++;
            }
        }
        s[t] = acc;
        block_sum(s);
        if (t == 0) {
            a.db[co] = s[0];
        }
    }
}

// The weight gradient as a register-tiled GEMM with the reduction split:
// dW[co][(ci,u,v)] = sum over positions j = (n, oy, ox) of the batch of
// dY[co][j] * im2col[(ci,u,v)][j]. The positions are cut into SPLITS
// chunks (ConvArgs.splits; each a multiple of 16 long, the last ones
// possibly empty) so that small layers still fill the GPU; block
// b = split * tiles + tile writes its tile's partial sums to
// y[(split * C_OUT + co) * C_IN K K + (ci,u,v)] (ConvArgs.y is the
// workspace here), and conv2d_backward_weight_reduce adds the splits in
// order. Grid: tiles * SPLITS, tiles = ceil(C_OUT / 64) * ceil(C_IN K K / 64).

// dY as the A operand: row co, k the position j (contiguous within an
// image), staged from chunk [j0, j1).
struct GradRowsStager {
    gptr<const float> dy;
    int c_out, ohw, m0, j0, j1;

    __device__ __forceinline__ void stage(shared_array<float, GEMM_BK * GEMM_LD>& s, int k0) const {
        int t = (int)threadIdx.x;
        int kk = t % GEMM_BK;
        int j = j0 + k0 + kk;
        int n = j / ohw;
        long long at = ((long long)n * c_out) * ohw + (j - n * ohw);
#pragma unroll
        for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
            int rr = t / GEMM_BK + q * (GEMM_THREADS / GEMM_BK);
            int co = m0 + rr;
            float v = 0.0f;
            if (j < j1 && co < c_out) {
                v = dy[at + (long long)co * ohw];
            }
            s[kk * GEMM_LD + rr] = v;
        }
    }
    __device__ __forceinline__ void next(int) const {}
};

// im2col as the B operand: row (ci,u,v), k the position j. A thread's
// four rows are decomposed once; each step decomposes its one position.
struct PatchRowsStager {
    gptr<const float> x;
    int c_in, h, w, ow, ohw, s, p, j0, j1;
    int valid[GEMM_BK * GEMM_BM / GEMM_THREADS];
    int off[GEMM_BK * GEMM_BM / GEMM_THREADS];  // (ci*H + u)*W + v
    int u[GEMM_BK * GEMM_BM / GEMM_THREADS];
    int v[GEMM_BK * GEMM_BM / GEMM_THREADS];

    __device__ __forceinline__ void stage(shared_array<float, GEMM_BK * GEMM_LD>& sh, int k0) const {
        int t = (int)threadIdx.x;
        int kk = t % GEMM_BK;
        int j = j0 + k0 + kk;
        int n = j / ohw;
        int pos = j - n * ohw;
        int oy = pos / ow;
        int iy0 = oy * s - p;
        int ix0 = (pos - oy * ow) * s - p;
        long long base = (long long)n * c_in * h * w + (long long)iy0 * w + ix0;
#pragma unroll
        for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
            int rr = t / GEMM_BK + q * (GEMM_THREADS / GEMM_BK);
            int iy = iy0 + u[q];
            int ix = ix0 + v[q];
            float val = 0.0f;
            if (j < j1 && valid[q] && iy >= 0 && iy < h && ix >= 0 && ix < w) {
                val = x[base + off[q]];
            }
            sh[kk * GEMM_LD + rr] = val;
        }
    }
    __device__ __forceinline__ void next(int) const {}
};

extern "C" __global__ void conv2d_backward_weight_gemm(const ConvArgs a) {
    int kdim = a.c_in * a.k * a.k;
    int ohw = a.oh * a.ow;
    int total = a.n * ohw;
    int tiles_n = (kdim + GEMM_BN - 1) / GEMM_BN;
    int tiles = (a.c_out + GEMM_BM - 1) / GEMM_BM * tiles_n;
    int split = (int)blockIdx.x / tiles;
    int tile = (int)blockIdx.x % tiles;
    int chunk = ((total + a.splits - 1) / a.splits + GEMM_BK - 1) / GEMM_BK * GEMM_BK;
    int j0 = split * chunk < total ? split * chunk : total;
    int j1 = j0 + chunk < total ? j0 + chunk : total;
    int m0 = tile / tiles_n * GEMM_BM;
    int n0 = tile % tiles_n * GEMM_BN;
    int t = (int)threadIdx.x;
    GradRowsStager g = {a.dy, a.c_out, ohw, m0, j0, j1};
    PatchRowsStager x;
    x.x = a.x;
    x.c_in = a.c_in;
    x.h = a.h;
    x.w = a.w_in;
    x.ow = a.ow;
    x.ohw = ohw;
    x.s = a.s;
    x.p = a.p;
    x.j0 = j0;
    x.j1 = j1;
    for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
        int r = n0 + t / GEMM_BK + q * (GEMM_THREADS / GEMM_BK);
        int ci = r / (a.k * a.k);
        int rem = r - ci * a.k * a.k;
        x.valid[q] = r < kdim;
        x.u[q] = rem / a.k;
        x.v[q] = rem - x.u[q] * a.k;
        x.off[q] = (ci * a.h + x.u[q]) * a.w_in + x.v[q];
    }
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(g, x, j1 - j0, acc);
    int r = m0 + t / (GEMM_BN / GEMM_TN) * GEMM_TM;
    int c = n0 + t % (GEMM_BN / GEMM_TN) * GEMM_TN;
    for (int i = 0; i < GEMM_TM; i++) {
        for (int jj = 0; jj < GEMM_TN; jj++) {
            if (r + i < a.c_out && c + jj < kdim) {
                a.y[((size_t)split * a.c_out + r + i) * kdim + c + jj] = acc[i][jj];
            }
        }
    }
}

// The splits' partial sums added in order, one thread per weight:
// dw[i] = sum_{split} y[split * C_OUT C_IN K K + i]; then one block of
// REDUCE_THREADS threads per bias, as in conv2d_backward_weight:
// db[co] = sum_j dy[co][j]. Grid: ceil(C_OUT C_IN K K / 256) + C_OUT.
// Writes dw and db.
extern "C" __global__ void conv2d_backward_weight_reduce(const ConvArgs a) {
    int len = a.c_out * a.c_in * a.k * a.k;
    int weight_blocks = (len + REDUCE_THREADS - 1) / REDUCE_THREADS;
    int b = (int)blockIdx.x;
    int t = (int)threadIdx.x;
    if (b < weight_blocks) {
        int i = b * REDUCE_THREADS + t;
        if (i < len) {
            float acc = 0.0f;
            for (int split = 0; split < a.splits; split++) {
                acc += a.y[(size_t)split * len + i];
            }
            a.dw[i] = acc;
        }
        return;
    }
    __shared__ shared_array<float, REDUCE_THREADS> s;
    int co = b - weight_blocks;
    int ohw = a.oh * a.ow;
    int total = a.n * ohw;
    float acc = 0.0f;
    for (int j = t; j < total; j += REDUCE_THREADS) {
        int n = j / ohw;
        acc += a.dy[((size_t)n * a.c_out + co) * ohw + (j - n * ohw)];
    }
    s[t] = acc;
    block_sum(s);
    if (t == 0) {
        a.db[co] = s[0];
    }
}

// The input gradient of a stride-1 convolution as a register-tiled GEMM:
// dX[ci][(n, iy, ix)] = act'(x) * sum_{(co,u,v)} W[co][ci][u][v] *
// dY[n][co][iy + P - u][ix + P - v] (0 outside dY), the taps summed in the
// order co, u, v with one fused multiply-add each. Rows are input
// channels, columns the batch's input positions, depth C_OUT K K. Grid:
// ceil(C_IN / 64) * ceil(N * H * W / 64) tiles. Writes dx.

// W as the A operand: row ci, k the tap (co, u, v), staged along k.
struct WeightTapsStager {
    gptr<const float> w;
    int c_in, kk2, m0, depth;

    __device__ __forceinline__ void stage(shared_array<float, GEMM_BK * GEMM_LD>& s, int k0) const {
        int t = (int)threadIdx.x;
        int kk = t % GEMM_BK;
        int kidx = k0 + kk;
        int co = kidx / kk2;
        long long at = (long long)co * c_in * kk2 + (kidx - co * kk2);
#pragma unroll
        for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
            int rr = t / GEMM_BK + q * (GEMM_THREADS / GEMM_BK);
            int ci = m0 + rr;
            float v = 0.0f;
            if (kidx < depth && ci < c_in) {
                v = w[at + (long long)ci * kk2];
            }
            s[kk * GEMM_LD + rr] = v;
        }
    }
    __device__ __forceinline__ void next(int) const {}
};

// dY gathered as the B operand: row (n, iy, ix), k the tap (co, u, v); a
// shared table holds each tap of the coming slice as co * OH * OW and
// (u, v), as in ConvTapsStager.
struct GradTapsStager {
    gptr<const float> dy;
    int oh, ow, k, depth;
    int valid;
    long long base;  // offset of (n, 0, iy + P, ix + P) in dY
    int ty0, tx0;    // iy + P, ix + P
    shared_array<int, 2 * GEMM_BK>* off;
    shared_array<int, 2 * GEMM_BK>* uv;

    __device__ __forceinline__ void stage(shared_array<float, GEMM_BK * GEMM_LD>& s, int k0) const {
        int t = (int)threadIdx.x;
        int buf = (k0 / GEMM_BK) & 1;
        int rr = t % GEMM_BM;
#pragma unroll
        for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
            int kk = t / GEMM_BM + q * (GEMM_THREADS / GEMM_BM);
            float v = 0.0f;
            if (valid && k0 + kk < depth) {
                int tap = (*uv)[buf * GEMM_BK + kk];
                int u = tap >> 8;
                int vv = tap & 255;
                int oy = ty0 - u;
                int ox = tx0 - vv;
                if (oy >= 0 && oy < oh && ox >= 0 && ox < ow) {
                    v = dy[base + (*off)[buf * GEMM_BK + kk] - (long long)u * ow - vv];
                }
            }
            s[kk * GEMM_LD + rr] = v;
        }
    }
    __device__ __forceinline__ void next(int k1) const {
        int t = (int)threadIdx.x;
        if (t < GEMM_BK && k1 + t < depth) {
            int kidx = k1 + t;
            int co = kidx / (k * k);
            int rem = kidx - co * k * k;
            int u = rem / k;
            int buf = (k1 / GEMM_BK) & 1;
            (*off)[buf * GEMM_BK + t] = co * oh * ow;
            (*uv)[buf * GEMM_BK + t] = u << 8 | (rem - u * k);
        }
    }
};

extern "C" __global__ void conv2d_backward_input_gemm(const ConvArgs a) {
    __shared__ shared_array<int, 2 * GEMM_BK> off;
    __shared__ shared_array<int, 2 * GEMM_BK> uv;
    int hw = a.h * a.w_in;
    int positions = a.n * hw;
    int kk2 = a.k * a.k;
    int depth = a.c_out * kk2;
    GemmPlace g = gemm_place(positions);
    WeightTapsStager w = {a.w, a.c_in, kk2, g.m0, depth};
    int col = g.n0 + (int)threadIdx.x % GEMM_BN;
    int img = col / hw;
    int iy = (col - img * hw) / a.w_in;
    int ix = col - img * hw - iy * a.w_in;
    GradTapsStager d;
    d.dy = a.dy;
    d.oh = a.oh;
    d.ow = a.ow;
    d.k = a.k;
    d.depth = depth;
    d.valid = col < positions;
    d.ty0 = iy + a.p;
    d.tx0 = ix + a.p;
    d.base = (long long)img * a.c_out * a.oh * a.ow + (long long)d.ty0 * a.ow + d.tx0;
    d.off = &off;
    d.uv = &uv;
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(w, d, depth, acc);
    for (int j = 0; j < GEMM_TN; j++) {
        int c = g.c + j;
        if (c >= positions) {
            continue;
        }
        int n = c / hw;
        int pos = c - n * hw;
        for (int i = 0; i < GEMM_TM; i++) {
            int ci = g.r + i;
            if (ci < a.c_in) {
                size_t at = ((size_t)n * a.c_in + ci) * hw + pos;
                a.dx[at] = acc[i][j] * act_grad(a.act, a.x[at]);
            }
        }
    }
}
