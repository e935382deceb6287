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

// A running decomposition of a tap index k = c * KK + r (c a channel, r
// the position u * K + v in the kernel, KK = K * K), advanced by BK at a
// time without dividing: the stagers step through K in order.
template <class C>
struct TapWalk {
    int c, r, kk, dc, dr;  // dc, dr: BK / KK, BK % KK

    __device__ __forceinline__ void start(int kidx, int kk_) {
        kk = kk_;
        c = kidx / kk;
        r = kidx - c * kk;
        dc = C::BK / kk;
        dr = C::BK - dc * kk;
    }
    __device__ __forceinline__ void step() {
        c += dc;
        r += dr;
        if (r >= kk) {
            r -= kk;
            c++;
        }
    }
};

// ceil(2^16 / K): (r * kernel_div(K)) >> 16 is r / K for r < 256 and
// K <= 16 (the rounding adds under r * K / 2^16 < 1/K).
__device__ __forceinline__ int kernel_div(int k) {
    return (65536 + k - 1) / k;
}

// The im2col operand of a convolution, staged without forming it: row r
// is output position (n, oy, ox) of the batch, k is tap (ci, u, v), and
// the element is x[n][ci][oy*S + u - P][ox*S + v - P] (0 in the padding).
// A shared table holds each tap of a coming slice of k as its offset
// (ci*H + u)*W + v in an image and the bits 1 << u | 1 << (16 + v) (all
// bits past the depth), computed by BK threads while the block multiplies
// (two buffers, by the slice's parity). Each thread stages one row,
// decomposed once into a pointer and a mask of its taps inside the image:
// bit u for the kernel rows, bit 16 + v for the kernel columns (none for
// a row past the batch's positions); a tap is read when all its bits are
// in the mask. K <= 16.
template <class C>
struct ConvTapsStager {
    gptr<const float> x;  // at (n, 0, oy*S - P, ox*S - P) (maybe outside)
    int h, w, k, depth;
    int mask;
    int kdiv;          // kernel_div(K)
    TapWalk<C> walk;   // (thread t < BK) the tap of its next table entry
    shared_array<int, 2 * C::BK>* off;
    shared_array<int, 2 * C::BK>* bits;
    float reg[C::PER_THREAD];

    __device__ __forceinline__ void init(gptr<const float> image, int iy0, int ix0, bool valid) {
        x = image + ((long long)iy0 * w + ix0);
        kdiv = kernel_div(k);
        walk.start((int)threadIdx.x % C::BK, k * k);
        mask = 0;
        for (int u = 0; u < k; u++) {
            mask |= (iy0 + u >= 0 && iy0 + u < h) << u;
            mask |= (ix0 + u >= 0 && ix0 + u < w) << (16 + u);
        }
        mask = valid ? mask : 0;
    }
    __device__ __forceinline__ void fetch(int k0) {
        int t = (int)threadIdx.x;
        int buf = (k0 / C::BK) & 1;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int kk = t / C::BM + q * (GEMM_THREADS / C::BM);
            int tap = (*bits)[buf * C::BK + kk];
            reg[q] = (mask & tap) == tap ? (float)x[(*off)[buf * C::BK + kk]] : 0.0f;
        }
    }
    __device__ __forceinline__ void store(GemmSlices<C>& s, int at) const {
        int t = (int)threadIdx.x;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int kk = t / C::BM + q * (GEMM_THREADS / C::BM);
            s[at + kk * C::LD + t % C::BM] = reg[q];
        }
    }
    __device__ __forceinline__ void next(int k1) {
        int t = (int)threadIdx.x;
        if (t < C::BK) {
            int u = walk.r * kdiv >> 16;
            int v = walk.r - u * k;
            int buf = (k1 / C::BK) & 1;
            (*off)[buf * C::BK + t] = (walk.c * h + u) * w + v;
            (*bits)[buf * C::BK + t] = k1 + t < depth ? 1 << u | 1 << (16 + v) : -1;
            walk.step();
        }
    }
};

// The same output as conv2d_forward as a register-tiled GEMM (gemm.cuh):
// Y[co][(n, oy, ox)] = act(b[co] + sum_{(ci,u,v)} W[co][(ci,u,v)] *
// im2col[(ci,u,v)][(n, oy, ox)]), the taps summed in the order ci, u, v
// with one fused multiply-add each (the padding's terms add 0). Grid:
// ceil(C_OUT / BM) * ceil(N * OH * OW / BN) tiles. Chosen by the schedule
// for layers with many output channels, where its tiles are full; the
// `_large` kernel takes GemmLarge tiles, the other GemmSmall.
template <class C>
__device__ __forceinline__ void conv2d_forward_tiled(const ConvArgs& a) {
    __shared__ shared_array<int, 2 * C::BK> off;
    __shared__ shared_array<int, 2 * C::BK> bits;
    int ohw = a.oh * a.ow;
    int positions = a.n * ohw;
    int depth = a.c_in * a.k * a.k;
    GemmPlace<C> g((int)blockIdx.x, positions);
    MatrixStager<C, true> w;
    w.init(a.w, depth, g.m0, a.c_out, depth);
    int col = g.n0 + (int)threadIdx.x % C::BN;
    int img = col / ohw;
    int oy = (col - img * ohw) / a.ow;
    int ox = col - img * ohw - oy * a.ow;
    ConvTapsStager<C> x;
    x.h = a.h;
    x.w = a.w_in;
    x.k = a.k;
    x.depth = depth;
    x.off = &off;
    x.bits = &bits;
    x.init(a.x + (long long)img * a.c_in * a.h * a.w_in, oy * a.s - a.p, ox * a.s - a.p,
           col < positions);
    float acc[C::TM][C::TN];
    gemm_tile<C>(w, x, depth, acc);
#pragma unroll
    for (int j = 0; j < C::TN; j++) {
        int c = g.col(j);
        if (c >= positions) {
            continue;
        }
        int n = c / ohw;
        int pos = c - n * ohw;
    #pragma unroll
        for (int i = 0; i < C::TM; i++) {
            int co = g.row(i);
            if (co < a.c_out) {
                a.y[((size_t)n * a.c_out + co) * ohw + pos] = act_apply_outlined(a.act, acc[i][j] + a.b[co]);
            }
        }
    }
}

// (The kernels name their templates in parentheses, which keeps
// argument-dependent lookup from also finding a copy of them in another
// namespace: the emulator's tests compile this file twice.)
extern "C" __global__ void conv2d_forward_gemm(const ConvArgs a) {
    (conv2d_forward_tiled<GemmSmall>)(a);
}
extern "C" __global__ void conv2d_forward_gemm_large(const ConvArgs a) {
    (conv2d_forward_tiled<GemmLarge>)(a);
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
// order. Grid: tiles * SPLITS, tiles = ceil(C_OUT / BM) * ceil(C_IN K K / BN);
// the `_large` kernel takes GemmLarge tiles, the other GemmSmall.

// A running decomposition of a position j = (n * OH + oy) * OW + ox of
// the batch, advanced by BK at a time without dividing (the stagers step
// through K in order).
template <class C>
struct PosWalk {
    int n, oy, ox, oh, ow, dn, doy, dox;  // (dn, doy, dox): BK decomposed

    __device__ __forceinline__ void start(int j, int oh_, int ow_) {
        oh = oh_;
        ow = ow_;
        n = j / (oh * ow);
        oy = (j - n * oh * ow) / ow;
        ox = j - (n * oh + oy) * ow;
        dn = C::BK / (oh * ow);
        doy = (C::BK - dn * oh * ow) / ow;
        dox = C::BK - (dn * oh + doy) * ow;
    }
    __device__ __forceinline__ void step() {
        n += dn;
        oy += doy;
        ox += dox;
        if (ox >= ow) {
            ox -= ow;
            oy++;
        }
        if (oy >= oh) {
            oy -= oh;
            n++;
        }
    }
};

// dY as the A operand: row co, k the position j (contiguous within an
// image), staged from chunk [j0, j1).
template <class C>
struct GradRowsStager {
    gptr<const float> dy;
    int c_out, ohw, m0, j0, j1;
    PosWalk<C> walk;  // the thread's position of the next slice
    float reg[C::PER_THREAD];

    __device__ __forceinline__ void fetch(int k0) {
        int t = (int)threadIdx.x;
        int j = j0 + k0 + t % C::BK;
        long long at = ((long long)walk.n * c_out) * ohw + walk.oy * walk.ow + walk.ox;
        walk.step();
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int co = m0 + t / C::BK + q * (GEMM_THREADS / C::BK);
            float v = 0.0f;
            if (j < j1 && co < c_out) {
                v = dy[at + (long long)co * ohw];
            }
            reg[q] = v;
        }
    }
    __device__ __forceinline__ void store(GemmSlices<C>& s, int at) const {
        int t = (int)threadIdx.x;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int rr = t / C::BK + q * (GEMM_THREADS / C::BK);
            s[at + t % C::BK * C::LD + rr] = reg[q];
        }
    }
    __device__ __forceinline__ void next(int) {}
};

// Bits lo..hi-1 of a mask (none when hi <= lo; 0 <= lo, hi <= 16).
__device__ __forceinline__ int bit_range(int lo, int hi) {
    return hi > lo ? (1 << hi) - (1 << lo) : 0;
}

// im2col as the B operand: row (ci,u,v), k the position j. A thread's
// rows are decomposed once, each into its offset (ci*H + u)*W + v and its
// bits 1 << u | 1 << (16 + v) (all bits for a row past C_IN K K); each
// step decomposes its one position into a pointer and the mask of the
// taps (u, v) that fall inside the image there (bit u for the kernel
// rows, bit 16 + v for the columns; none past the chunk), and reads a row
// when all its bits are in the mask.
template <class C>
struct PatchRowsStager {
    gptr<const float> x;
    int c_in, h, w, k, s, p, j0, j1;
    PosWalk<C> walk;  // the thread's position of the next slice
    int off[C::PER_THREAD];
    int bits[C::PER_THREAD];
    float reg[C::PER_THREAD];

    __device__ __forceinline__ void fetch(int k0) {
        int t = (int)threadIdx.x;
        int j = j0 + k0 + t % C::BK;
        int iy0 = walk.oy * s - p;
        int ix0 = walk.ox * s - p;
        gptr<const float> at = x + ((long long)walk.n * c_in * h * w + (long long)iy0 * w + ix0);
        walk.step();
        int rows = bit_range(iy0 < 0 ? -iy0 : 0, h - iy0 < k ? h - iy0 : k);
        int cols = bit_range(ix0 < 0 ? -ix0 : 0, w - ix0 < k ? w - ix0 : k);
        int mask = j < j1 ? rows | cols << 16 : 0;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            reg[q] = (mask & bits[q]) == bits[q] ? (float)at[off[q]] : 0.0f;
        }
    }
    __device__ __forceinline__ void store(GemmSlices<C>& sh, int at) const {
        int t = (int)threadIdx.x;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int rr = t / C::BK + q * (GEMM_THREADS / C::BK);
            sh[at + t % C::BK * C::LD + rr] = reg[q];
        }
    }
    __device__ __forceinline__ void next(int) {}
};

template <class C>
__device__ __forceinline__ void conv2d_backward_weight_tiled(const ConvArgs& a) {
    int kdim = a.c_in * a.k * a.k;
    int ohw = a.oh * a.ow;
    int total = a.n * ohw;
    int tiles_n = (kdim + C::BN - 1) / C::BN;
    int tiles = (a.c_out + C::BM - 1) / C::BM * tiles_n;
    int split = (int)blockIdx.x / tiles;
    int chunk = ((total + a.splits - 1) / a.splits + 15) / 16 * 16;
    int j0 = split * chunk < total ? split * chunk : total;
    int j1 = j0 + chunk < total ? j0 + chunk : total;
    GemmPlace<C> g((int)blockIdx.x % tiles, kdim);
    int t = (int)threadIdx.x;
    GradRowsStager<C> gr;
    gr.dy = a.dy;
    gr.c_out = a.c_out;
    gr.ohw = ohw;
    gr.m0 = g.m0;
    gr.j0 = j0;
    gr.j1 = j1;
    gr.walk.start(j0 + t % C::BK, a.oh, a.ow);
    PatchRowsStager<C> x;
    x.x = a.x;
    x.c_in = a.c_in;
    x.h = a.h;
    x.w = a.w_in;
    x.walk.start(j0 + t % C::BK, a.oh, a.ow);
    x.s = a.s;
    x.p = a.p;
    x.j0 = j0;
    x.j1 = j1;
    x.k = a.k;
    for (int q = 0; q < C::PER_THREAD; q++) {
        int r = g.n0 + t / C::BK + q * (GEMM_THREADS / C::BK);
        int ci = r / (a.k * a.k);
        int rem = r - ci * a.k * a.k;
        int u = rem / a.k;
        int v = rem - u * a.k;
        x.off[q] = (ci * a.h + u) * a.w_in + v;
        x.bits[q] = r < kdim ? 1 << u | 1 << (16 + v) : -1;
    }
    float acc[C::TM][C::TN];
    gemm_tile<C>(gr, x, j1 - j0, acc);
#pragma unroll
    for (int i = 0; i < C::TM; i++) {
    #pragma unroll
        for (int jj = 0; jj < C::TN; jj++) {
            int r = g.row(i), c = g.col(jj);
            if (r < a.c_out && c < kdim) {
                a.y[((size_t)split * a.c_out + r) * kdim + c] = acc[i][jj];
            }
        }
    }
}

extern "C" __global__ void conv2d_backward_weight_gemm(const ConvArgs a) {
    (conv2d_backward_weight_tiled<GemmSmall>)(a);
}
extern "C" __global__ void conv2d_backward_weight_gemm_large(const ConvArgs a) {
    (conv2d_backward_weight_tiled<GemmLarge>)(a);
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
// ceil(C_IN / BM) * ceil(N * H * W / BN) tiles; the `_large` kernel takes
// GemmLarge tiles, the other GemmSmall. Writes dx.

// W as the A operand: row ci, k the tap (co, u, v), staged along k.
template <class C>
struct WeightTapsStager {
    gptr<const float> w;
    int c_in, kk2, m0, depth;
    TapWalk<C> walk;  // the thread's tap of the next slice
    float reg[C::PER_THREAD];

    __device__ __forceinline__ void fetch(int k0) {
        int t = (int)threadIdx.x;
        int kidx = k0 + t % C::BK;
        long long at = (long long)walk.c * c_in * kk2 + walk.r;
        walk.step();
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int ci = m0 + t / C::BK + q * (GEMM_THREADS / C::BK);
            float v = 0.0f;
            if (kidx < depth && ci < c_in) {
                v = w[at + (long long)ci * kk2];
            }
            reg[q] = v;
        }
    }
    __device__ __forceinline__ void store(GemmSlices<C>& s, int at) const {
        int t = (int)threadIdx.x;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int rr = t / C::BK + q * (GEMM_THREADS / C::BK);
            s[at + t % C::BK * C::LD + rr] = reg[q];
        }
    }
    __device__ __forceinline__ void next(int) {}
};

// dY gathered as the B operand: row (n, iy, ix), k the tap (co, u, v); a
// shared table holds each tap of a coming slice as its offset
// co*OH*OW - u*OW - v from (n, 0, iy + P, ix + P) and its bits, and each
// thread a mask of the taps whose (oy, ox) = (iy + P - u, ix + P - v)
// lies inside dY, as in ConvTapsStager.
template <class C>
struct GradTapsStager {
    gptr<const float> dy;  // at (n, 0, iy + P, ix + P) (maybe outside)
    int oh, ow, k, depth;
    int mask;
    int kdiv;
    TapWalk<C> walk;
    shared_array<int, 2 * C::BK>* off;
    shared_array<int, 2 * C::BK>* bits;
    float reg[C::PER_THREAD];

    __device__ __forceinline__ void init(gptr<const float> grad, int ty0, int tx0, bool valid) {
        dy = grad + ((long long)ty0 * ow + tx0);
        kdiv = kernel_div(k);
        walk.start((int)threadIdx.x % C::BK, k * k);
        mask = 0;
        for (int u = 0; u < k; u++) {
            mask |= (ty0 - u >= 0 && ty0 - u < oh) << u;
            mask |= (tx0 - u >= 0 && tx0 - u < ow) << (16 + u);
        }
        mask = valid ? mask : 0;
    }
    __device__ __forceinline__ void fetch(int k0) {
        int t = (int)threadIdx.x;
        int buf = (k0 / C::BK) & 1;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int kk = t / C::BM + q * (GEMM_THREADS / C::BM);
            int tap = (*bits)[buf * C::BK + kk];
            reg[q] = (mask & tap) == tap ? (float)dy[(*off)[buf * C::BK + kk]] : 0.0f;
        }
    }
    __device__ __forceinline__ void store(GemmSlices<C>& s, int at) const {
        int t = (int)threadIdx.x;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            int kk = t / C::BM + q * (GEMM_THREADS / C::BM);
            s[at + kk * C::LD + t % C::BM] = reg[q];
        }
    }
    __device__ __forceinline__ void next(int k1) {
        int t = (int)threadIdx.x;
        if (t < C::BK) {
            int u = walk.r * kdiv >> 16;
            int v = walk.r - u * k;
            int buf = (k1 / C::BK) & 1;
            (*off)[buf * C::BK + t] = walk.c * oh * ow - u * ow - v;
            (*bits)[buf * C::BK + t] = k1 + t < depth ? 1 << u | 1 << (16 + v) : -1;
            walk.step();
        }
    }
};

template <class C>
__device__ __forceinline__ void conv2d_backward_input_tiled(const ConvArgs& a) {
    __shared__ shared_array<int, 2 * C::BK> off;
    __shared__ shared_array<int, 2 * C::BK> bits;
    int hw = a.h * a.w_in;
    int positions = a.n * hw;
    int kk2 = a.k * a.k;
    int depth = a.c_out * kk2;
    GemmPlace<C> g((int)blockIdx.x, positions);
    WeightTapsStager<C> w;
    w.w = a.w;
    w.c_in = a.c_in;
    w.kk2 = kk2;
    w.m0 = g.m0;
    w.depth = depth;
    w.walk.start((int)threadIdx.x % C::BK, kk2);
    int col = g.n0 + (int)threadIdx.x % C::BN;
    int img = col / hw;
    int iy = (col - img * hw) / a.w_in;
    int ix = col - img * hw - iy * a.w_in;
    GradTapsStager<C> d;
    d.oh = a.oh;
    d.ow = a.ow;
    d.k = a.k;
    d.depth = depth;
    d.off = &off;
    d.bits = &bits;
    d.init(a.dy + (long long)img * a.c_out * a.oh * a.ow, iy + a.p, ix + a.p, col < positions);
    float acc[C::TM][C::TN];
    gemm_tile<C>(w, d, depth, acc);
#pragma unroll
    for (int j = 0; j < C::TN; j++) {
        int c = g.col(j);
        if (c >= positions) {
            continue;
        }
        int n = c / hw;
        int pos = c - n * hw;
    #pragma unroll
        for (int i = 0; i < C::TM; i++) {
            int ci = g.row(i);
            if (ci < a.c_in) {
                size_t at = ((size_t)n * a.c_in + ci) * hw + pos;
                a.dx[at] = acc[i][j] * act_grad(a.act, a.x[at]);
            }
        }
    }
}

extern "C" __global__ void conv2d_backward_input_gemm(const ConvArgs a) {
    (conv2d_backward_input_tiled<GemmSmall>)(a);
}
extern "C" __global__ void conv2d_backward_input_gemm_large(const ConvArgs a) {
    (conv2d_backward_input_tiled<GemmLarge>)(a);
}
