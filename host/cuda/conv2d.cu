// 2-D convolution (cross-correlation, PyTorch's Conv2d): forward with bias
// and activation fused, gradient of the input, gradients of the weights and
// bias. Mirrors lenet-core's conv::conv2d and its backward.
#include "lenet.cuh"

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
        const float* xp = a.x + ((size_t)n * a.c_in + ci) * a.h * a.w_in;
        const float* wp = a.w + ((size_t)co * a.c_in + ci) * a.k * a.k;
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
        const float* dyp = a.dy + ((size_t)n * a.c_out + co) * a.oh * a.ow;
        const float* wp = a.w + ((size_t)co * a.c_in + ci) * a.k * a.k;
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

// One block of REDUCE_THREADS threads per weight (co, ci, u, v), then one
// per bias co: grid = C_OUT * C_IN * K * K + C_OUT blocks. Each thread sums
// the output rows (n, oy) = threadIdx.x, threadIdx.x + REDUCE_THREADS, ...,
// each row along ox; block_sum adds the threads' shares.
// dw[co][ci][u][v] = sum_{n,oy,ox} dy[n][co][oy][ox] * x[n][ci][oy*S + u - P][ox*S + v - P]
// db[co] = sum_{n,oy,ox} dy[n][co][oy][ox]
// Writes dw and db (does not accumulate).
extern "C" __global__ void conv2d_backward_weight(const ConvArgs a) {
    __shared__ float s[REDUCE_THREADS];
    int nw = a.c_out * a.c_in * a.k * a.k;
    int b = (int)blockIdx.x;
    int rows = a.n * a.oh;
    float acc = 0.0f;
    if (b < nw) {
        int v = b % a.k;
        int u = (b / a.k) % a.k;
        int ci = (b / (a.k * a.k)) % a.c_in;
        int co = b / (a.k * a.k * a.c_in);
        for (int r = (int)threadIdx.x; r < rows; r += REDUCE_THREADS) {
            int n = r / a.oh;
            int oy = r % a.oh;
            int iy = oy * a.s + u - a.p;
            if (iy < 0 || iy >= a.h) {
                continue;
            }
            const float* dyr = a.dy + (((size_t)n * a.c_out + co) * a.oh + oy) * a.ow;
            const float* xr = a.x + (((size_t)n * a.c_in + ci) * a.h + iy) * a.w_in;
            for (int ox = 0; ox < a.ow; ox++) {
                int ix = ox * a.s + v - a.p;
                if (ix >= 0 && ix < a.w_in) {
                    acc += dyr[ox] * xr[ix];
                }
            }
        }
    } else {
        int co = b - nw;
        for (int r = (int)threadIdx.x; r < rows; r += REDUCE_THREADS) {
            int n = r / a.oh;
            int oy = r % a.oh;
            const float* dyr = a.dy + (((size_t)n * a.c_out + co) * a.oh + oy) * a.ow;
            for (int ox = 0; ox < a.ow; ox++) {
                acc += dyr[ox];
            }
        }
    }
    s[threadIdx.x] = acc;
    block_sum(s);
    if (threadIdx.x == 0) {
        if (b < nw) {
            a.dw[b] = s[0];
        } else {
            a.db[b - nw] = s[0];
        }
    }
}
