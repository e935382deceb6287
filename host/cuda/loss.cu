// Softmax cross-entropy of a batch: the mean loss and dL/dlogits. Mirrors
// lenet-core's loss::cross_entropy and cross_entropy_backward.
#include "lenet.cuh"

// One block of REDUCE_THREADS threads; thread t takes samples t, t + 256, ...
// loss_n = (m - z[label]) + ln(sum_j exp(z_j - m)), m = max_j z_j
// dlogits[n][j] = scale * (exp(z_j - m) / sum - [j == label])
// losses[slot] = (sum_n loss_n) / N, the per-thread sums added by block_sum.
extern "C" __global__ void softmax_cross_entropy(const LossArgs a) {
    __shared__ shared_array<float, REDUCE_THREADS> s;
    float total = 0.0f;
    for (int n = (int)threadIdx.x; n < a.n; n += REDUCE_THREADS) {
        gptr<const float> z = a.logits + (size_t)n * a.classes;
        gptr<float> d = a.dlogits + (size_t)n * a.classes;
        int label = a.labels[n];
        float m = z[0];
        for (int j = 1; j < a.classes; j++) {
            m = fmaxf(m, z[j]);
        }
        float sum = 0.0f;
        for (int j = 0; j < a.classes; j++) {
            sum += expf(z[j] - m);
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < a.classes; j++) {
            float p = expf(z[j] - m) * inv;
            if (j == label) {
                p -= 1.0f;
            }
            d[j] = a.scale * p;
        }
        total += (m - z[label]) + logf(sum);
    }
    s[threadIdx.x] = total;
    block_sum(s);
    if (threadIdx.x == 0) {
        a.losses[a.slot] = s[0] / (float)a.n;
    }
}
