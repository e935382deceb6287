// 2-D pooling without padding, floor mode (PyTorch's MaxPool2d and
// AvgPool2d): forward and the gradient of the input, for any window and
// stride (overlapping windows too). Mirrors lenet-core's pool module.
#include "lenet.cuh"

// One thread per output value (n, c, oy, ox); grid covers N * C * OH * OW.
// max: y = max over the window (the first maximum wins), arg = its index
// iy * W + ix; average: y = sum over the window / K^2.
extern "C" __global__ void pool_forward(const PoolArgs a) {
    int i = global_index();
    if (i >= a.n * a.c * a.oh * a.ow) {
        return;
    }
    int ox = i % a.ow;
    int oy = (i / a.ow) % a.oh;
    int nc = i / (a.ow * a.oh);
    gptr<const float> xp = a.x + (size_t)nc * a.h * a.w_in;
    if (a.max) {
        int best = (oy * a.s) * a.w_in + ox * a.s;
        float m = xp[best];
        for (int u = 0; u < a.k; u++) {
            for (int v = 0; v < a.k; v++) {
                int at = (oy * a.s + u) * a.w_in + ox * a.s + v;
                if (xp[at] > m) {
                    m = xp[at];
                    best = at;
                }
            }
        }
        a.y[i] = m;
        a.arg[i] = best;
    } else {
        float sum = 0.0f;
        for (int u = 0; u < a.k; u++) {
            for (int v = 0; v < a.k; v++) {
                sum += xp[(oy * a.s + u) * a.w_in + ox * a.s + v];
            }
        }
        a.y[i] = sum / (float)(a.k * a.k);
    }
}

// One thread per input value (n, c, iy, ix); grid covers N * C * H * W.
// dx = act'(x) * sum over the windows (oy, ox) that hold (iy, ix) of
// dy[oy][ox] (max: only where arg names (iy, ix)) or dy[oy][ox] / K^2.
// Writes dx (does not accumulate).
extern "C" __global__ void pool_backward(const PoolArgs a) {
    int i = global_index();
    if (i >= a.n * a.c * a.h * a.w_in) {
        return;
    }
    int ix = i % a.w_in;
    int iy = (i / a.w_in) % a.h;
    int nc = i / (a.w_in * a.h);
    gptr<const float> dyp = a.dy + (size_t)nc * a.oh * a.ow;
    gptr<const int> argp = a.arg + (size_t)nc * a.oh * a.ow;
    int oy0 = iy >= a.k ? (iy - a.k) / a.s + 1 : 0;
    int ox0 = ix >= a.k ? (ix - a.k) / a.s + 1 : 0;
    int oy1 = iy / a.s < a.oh - 1 ? iy / a.s : a.oh - 1;
    int ox1 = ix / a.s < a.ow - 1 ? ix / a.s : a.ow - 1;
    int self = iy * a.w_in + ix;
    float acc = 0.0f;
    for (int oy = oy0; oy <= oy1; oy++) {
        for (int ox = ox0; ox <= ox1; ox++) {
            int o = oy * a.ow + ox;
            if (a.max) {
                if (argp[o] == self) {
                    acc += dyp[o];
                }
            } else {
                acc += dyp[o] / (float)(a.k * a.k);
            }
        }
    }
    a.dx[i] = acc * act_grad(a.act, a.x[i]);
}
