// Bilinear resizing, align_corners=False (PyTorch's nn.Upsample(size,
// mode="bilinear")): forward, and the gradient of the input in gather
// form. Mirrors lenet-core's resize module: the same taps, the same
// expression order, and the backward sums in the order of
// resize::backward, so both give the same bits.
#include "lenet.cuh"

// The two input pixels and their weights for output pixel o of a side
// resized from n_in to n_out, as resize::taps:
// src = max((o + 0.5) * n_in / n_out - 0.5, 0), i0 = min(floor(src), n_in - 1),
// i1 = min(i0 + 1, n_in - 1), w1 = clamp(src - i0, 0, 1), w0 = 1 - w1.
__device__ __forceinline__ void resize_taps(int n_in, int n_out, int o, int* i0, int* i1,
                                            float* w0, float* w1) {
    float scale = (float)n_in / (float)n_out;
    float src = fmaxf(scale * ((float)o + 0.5f) - 0.5f, 0.0f);
    int f = (int)floorf(src);
    f = f < n_in - 1 ? f : n_in - 1;
    float l = fminf(fmaxf(src - (float)f, 0.0f), 1.0f);
    *i0 = f;
    *i1 = f + 1 < n_in ? f + 1 : f;
    *w0 = 1.0f - l;
    *w1 = l;
}

// The first output pixel o in [0, n_out] whose tap i0 is at least i
// (n_out if none). i0 never decreases with o, so a binary search finds it.
__device__ __forceinline__ int resize_first_out(int n_in, int n_out, int i) {
    int lo = 0;
    int hi = n_out;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int i0, i1;
        float w0, w1;
        resize_taps(n_in, n_out, mid, &i0, &i1, &w0, &w1);
        if (i0 >= i) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

// One thread per output value (n, c, oy, ox); grid covers N * C * OH * OW.
// y = wy0 * (wx0 * x[y0][x0] + wx1 * x[y0][x1]) + wy1 * (wx0 * x[y1][x0] + wx1 * x[y1][x1])
extern "C" __global__ void upsample_forward(const UpsampleArgs a) {
    int i = global_index();
    if (i >= a.n * a.c * a.oh * a.ow) {
        return;
    }
    int ox = i % a.ow;
    int oy = (i / a.ow) % a.oh;
    int nc = i / (a.ow * a.oh);
    gptr<const float> xp = a.x + (size_t)nc * a.h * a.w_in;
    int y0, y1, x0, x1;
    float wy0, wy1, wx0, wx1;
    resize_taps(a.h, a.oh, oy, &y0, &y1, &wy0, &wy1);
    resize_taps(a.w_in, a.ow, ox, &x0, &x1, &wx0, &wx1);
    float top = wx0 * xp[y0 * a.w_in + x0] + wx1 * xp[y0 * a.w_in + x1];
    float bottom = wx0 * xp[y1 * a.w_in + x0] + wx1 * xp[y1 * a.w_in + x1];
    a.y[i] = wy0 * top + wy1 * bottom;
}

// One thread per input value (n, c, iy, ix); grid covers N * C * H * W.
// dx[iy][ix] = act'(x) * sum over the outputs (oy, ox) with a tap on
// (iy, ix), in row-major order, of w_tap * dy[oy][ox], the four taps of an
// output in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1) and each one
// that lands on (iy, ix) counted (an edge pixel can be both taps). The
// outputs with a row tap on iy are those with y0 in {iy - 1, iy}: a range
// of rows found by binary search (columns alike). Writes dx.
extern "C" __global__ void upsample_backward(const UpsampleArgs a) {
    int i = global_index();
    if (i >= a.n * a.c * a.h * a.w_in) {
        return;
    }
    int ix = i % a.w_in;
    int iy = (i / a.w_in) % a.h;
    int nc = i / (a.w_in * a.h);
    gptr<const float> dyp = a.dy + (size_t)nc * a.oh * a.ow;
    int oy_lo = resize_first_out(a.h, a.oh, iy - 1);
    int oy_hi = resize_first_out(a.h, a.oh, iy + 1);
    int ox_lo = resize_first_out(a.w_in, a.ow, ix - 1);
    int ox_hi = resize_first_out(a.w_in, a.ow, ix + 1);
    float acc = 0.0f;
    for (int oy = oy_lo; oy < oy_hi; oy++) {
        int y0, y1;
        float wy0, wy1;
        resize_taps(a.h, a.oh, oy, &y0, &y1, &wy0, &wy1);
        for (int ox = ox_lo; ox < ox_hi; ox++) {
            int x0, x1;
            float wx0, wx1;
            resize_taps(a.w_in, a.ow, ox, &x0, &x1, &wx0, &wx1);
            float g = dyp[oy * a.ow + ox];
            if (y0 == iy && x0 == ix) {
                acc += wy0 * wx0 * g;
            }
            if (y0 == iy && x1 == ix) {
                acc += wy0 * wx1 * g;
            }
            if (y1 == iy && x0 == ix) {
                acc += wy1 * wx0 * g;
            }
            if (y1 == iy && x1 == ix) {
                acc += wy1 * wx1 * g;
            }
        }
    }
    a.dx[i] = acc * act_grad(a.act, a.x[i]);
}
