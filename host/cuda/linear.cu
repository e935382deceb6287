// Fully connected layer (PyTorch's Linear): forward with bias and
// activation fused, gradient of the input, gradients of the weights and
// bias. Mirrors lenet-core's linear module.
#include "lenet.cuh"

// One thread per output (n, o); grid covers N * F_OUT threads.
// y[n][o] = act(b[o] + sum_i w[o][i] * x[n][i])
extern "C" __global__ void linear_forward(const LinearArgs a) {
    int t = global_index();
    if (t >= a.n * a.f_out) {
        return;
    }
    int o = t % a.f_out;
    int n = t / a.f_out;
    gptr<const float> xp = a.x + (size_t)n * a.f_in;
    gptr<const float> wp = a.w + (size_t)o * a.f_in;
    float acc = 0.0f;
    for (int i = 0; i < a.f_in; i++) {
        acc += wp[i] * xp[i];
    }
    a.y[t] = act_apply(a.act, acc + a.b[o]);
}

// One thread per input (n, i); grid covers N * F_IN threads.
// dx[n][i] = act'(x[n][i]) * sum_o w[o][i] * dy[n][o]. Writes dx.
extern "C" __global__ void linear_backward_input(const LinearArgs a) {
    int t = global_index();
    if (t >= a.n * a.f_in) {
        return;
    }
    int i = t % a.f_in;
    int n = t / a.f_in;
    gptr<const float> dyp = a.dy + (size_t)n * a.f_out;
    float acc = 0.0f;
    for (int o = 0; o < a.f_out; o++) {
        acc += a.w[(size_t)o * a.f_in + i] * dyp[o];
    }
    a.dx[t] = acc * act_grad(a.act, a.x[t]);
}

// One thread per weight (o, i), then one per bias o; grid covers
// F_OUT * F_IN + F_OUT threads. Sums over the batch in order n = 0..N-1.
// dw[o][i] = sum_n dy[n][o] * x[n][i];  db[o] = sum_n dy[n][o].
// Writes dw and db.
extern "C" __global__ void linear_backward_weight(const LinearArgs a) {
    int t = global_index();
    int nw = a.f_out * a.f_in;
    if (t < nw) {
        int i = t % a.f_in;
        int o = t / a.f_in;
        float acc = 0.0f;
        for (int n = 0; n < a.n; n++) {
            acc += a.dy[(size_t)n * a.f_out + o] * a.x[(size_t)n * a.f_in + i];
        }
        a.dw[t] = acc;
    } else if (t < nw + a.f_out) {
        int o = t - nw;
        float acc = 0.0f;
        for (int n = 0; n < a.n; n++) {
            acc += a.dy[(size_t)n * a.f_out + o];
        }
        a.db[o] = acc;
    }
}
