// Dropout (PyTorch's nn.Dropout in training): the input times a noise of
// 0 or 1 / (1 - p), and the gradient times the same noise. The noise is
// lenet-core's dropout::mask, a pure function of (seed, step, layer,
// index), recomputed in the backward pass instead of stored; the host
// computes threshold and scale with dropout::threshold and dropout::scale.
#include "lenet.cuh"

// SplitMix64's output function, as dropout::mix64.
__device__ __forceinline__ unsigned long long dropout_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// The noise of value `index` of the batch tensor (sample * F + feature),
// as dropout::mask: 0 where dropout::bits is below the threshold, else
// the scale.
__device__ __forceinline__ float dropout_noise(const DropoutArgs& a, unsigned long long index) {
    unsigned long long k =
        dropout_mix64(a.seed ^ dropout_mix64(a.step + ((unsigned long long)a.layer << 48)));
    unsigned int bits =
        (unsigned int)(dropout_mix64(k ^ (index * 0x9E3779B97F4A7C15ULL)) >> 40);
    return bits < a.threshold ? 0.0f : a.scale;
}

// One thread per value; grid covers LEN = N * F threads.
// y[i] = x[i] * noise(i)
extern "C" __global__ void dropout_forward(const DropoutArgs a) {
    int i = global_index();
    if (i >= a.len) {
        return;
    }
    a.y[i] = a.x[i] * dropout_noise(a, (unsigned long long)i);
}

// One thread per value; grid covers LEN = N * F threads.
// dx[i] = dy[i] * noise(i) * act'(x[i])  (x: the layer's input). Writes dx.
extern "C" __global__ void dropout_backward(const DropoutArgs a) {
    int i = global_index();
    if (i >= a.len) {
        return;
    }
    a.dx[i] = a.dy[i] * dropout_noise(a, (unsigned long long)i) * act_grad(a.act, a.x[i]);
}
