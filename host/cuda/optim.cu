// Optimizer updates, one thread per parameter; grid covers LEN threads.
// Each writes the operations of lenet-core's one definition
// (optim::AdamScalars::update, optim::Sgd::update) in the same order, so
// that the CPU and the GPU apply the same update to the same gradient.
#include "lenet.cuh"

// g += wd * p;  m = lerp(m, g, w1);  v = beta2 v + w2 g^2;
// p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
extern "C" __global__ void adam_update(const AdamArgs a) {
    int i = global_index();
    if (i >= a.len) {
        return;
    }
    float p = a.p[i];
    float g = a.g[i];
    if (a.weight_decay != 0.0f) {
        g += a.weight_decay * p;
    }
    float m = a.m[i];
    // m.lerp_(g, w1), in PyTorch's two-branch form
    m = fabsf(a.w1) < 0.5f ? m + a.w1 * (g - m) : g - (g - m) * (1.0f - a.w1);
    float v = a.v[i] * a.beta2 + a.w2 * g * g;
    float denom = sqrtf(v) / a.bc2_sqrt + a.eps;
    p += -a.step_size * m / denom;
    a.m[i] = m;
    a.v[i] = v;
    a.p[i] = p;
}

// d = g + wd * p;  buf = d (first step) or momentum * buf + d;  p -= lr * buf
// (p -= lr * d without momentum)
extern "C" __global__ void sgd_update(const SgdArgs a) {
    int i = global_index();
    if (i >= a.len) {
        return;
    }
    float p = a.p[i];
    float d = a.g[i];
    if (a.weight_decay != 0.0f) {
        d += a.weight_decay * p;
    }
    if (a.momentum != 0.0f) {
        float b = a.first ? d : a.momentum * a.buf[i] + d;
        a.buf[i] = b;
        d = b;
    }
    a.p[i] = p - a.lr * d;
}
