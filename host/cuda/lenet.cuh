// Shared definitions of lenet's CUDA kernels: the argument structs (one per
// op family, passed by value; `host/src/gpu/args.rs` mirrors them field for
// field), the activation codes, and the activation functions with the
// formulas of lenet-core (`core/src/activation.rs`).
//
// Legend: N batch, C channels, H rows, W columns, K kernel side, S stride,
// P padding, F features. Every tensor is row-major, batch first:
// images and feature maps (N, C, H, W), vectors (N, F), conv weights
// (C_OUT, C_IN, K, K), linear weights (F_OUT, F_IN).
//
// The same source compiles two ways: by NVRTC to PTX for the GPU, and by a
// C++ compiler for the CPU with emu/cuda_emu.h, which models the CUDA
// execution model (grid, blocks, threads, __shared__, __syncthreads).
#pragma once

#ifdef __CUDACC__
// A pointer to global memory (checked on the emulated device).
template <class T>
using gptr = T*;

// N elements of block-shared memory, declared `__shared__` (checked on the
// emulated device: bounds, reads of unwritten elements, races).
template <class T, int N>
struct alignas(16) shared_array {
    T v[N];
    template <class I>
    __device__ __forceinline__ T& operator[](I i) {
        return v[i];
    }
    // Elements i..i+3 as one vector load (T = float; i a multiple of 4).
    template <class I>
    __device__ __forceinline__ float4 load4(I i) {
        return *reinterpret_cast<const float4*>(&v[i]);
    }
};
#else
#include "emu/cuda_emu.h"
#endif

// Threads per block of the block-reduction kernels (a power of two).
#define REDUCE_THREADS 256

// Largest convolution kernel side (conv2d_backward_weight keeps one sum
// per kernel column in registers).
#define CONV_KMAX 11

// Activation codes (lenet-core's Activation; 0: identity).
#define ACT_NONE 0
#define ACT_SIGMOID 1
#define ACT_RELU 2
#define ACT_TANH 3

// act(x), as lenet-core's Activation::apply (sigmoid in the form that never
// overflows).
__device__ __forceinline__ float act_apply(int act, float x) {
    if (act == ACT_SIGMOID) {
        if (x >= 0.0f) {
            return 1.0f / (1.0f + expf(-x));
        }
        float e = expf(x);
        return e / (1.0f + e);
    }
    if (act == ACT_RELU) {
        return x < 0.0f ? 0.0f : x;
    }
    if (act == ACT_TANH) {
        return tanhf(x);
    }
    return x;
}

// act'(x) from the output y = act(x), as Activation::derivative_from_output:
// y (1 - y), [y > 0], 1 - y^2; 1 for the identity.
__device__ __forceinline__ float act_grad(int act, float y) {
    if (act == ACT_SIGMOID) {
        return y * (1.0f - y);
    }
    if (act == ACT_RELU) {
        return y > 0.0f ? 1.0f : 0.0f;
    }
    if (act == ACT_TANH) {
        return 1.0f - y * y;
    }
    return 1.0f;
}

// Sum of s[0..REDUCE_THREADS) into s[0], a fixed tree (so the result does
// not depend on thread timing). Every thread of the block must call it.
__device__ __forceinline__ void block_sum(shared_array<float, REDUCE_THREADS>& s) {
    unsigned t = threadIdx.x;
    __syncthreads();
    for (unsigned half = REDUCE_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) {
            s[t] += s[t + half];
        }
        __syncthreads();
    }
}

// gather_batch: builds a normalized, augmented mini-batch from the training
// set kept on the device.
struct GatherArgs {
    gptr<const unsigned char> images;  // (N_SET, 28, 28) raw pixels
    gptr<const unsigned char> labels;  // (N_SET)
    gptr<const unsigned int> order;    // (N_EPOCH) image index of each position
    gptr<const signed char> aug;       // (N_EPOCH, 3) flip, dy, dx; null: none
    gptr<float> x;                     // (N, 1, 28, 28) out
    gptr<int> y;                       // (N) out: labels
    int first;                         // position in `order` of the batch's first image
    int n;                             // N
    float mean;                        // normalization: (p / 255 - mean) / std
    float std;
};

// conv2d_forward, conv2d_backward_input, conv2d_backward_weight.
struct ConvArgs {
    gptr<const float> x;   // (N, C_IN, H, W) input
    gptr<const float> w;   // (C_OUT, C_IN, K, K)
    gptr<const float> b;   // (C_OUT)
    gptr<float> y;         // (N, C_OUT, OH, OW) output; the weight gradient's
                           // partial sums (SPLITS, C_OUT, C_IN, K, K)
    gptr<const float> dy;  // (N, C_OUT, OH, OW) dL/d(pre-activation output)
    gptr<float> dx;        // (N, C_IN, H, W)
    gptr<float> dw;        // (C_OUT, C_IN, K, K)
    gptr<float> db;        // (C_OUT)
    int n, c_in, h, w_in, c_out, oh, ow, k, s, p;
    int act;               // forward: activation applied to the output;
                           // backward input: activation whose output x holds
    int splits;            // conv2d_backward_weight_gemm: chunks of the positions
};

// pool_forward, pool_backward (no padding, floor mode).
struct PoolArgs {
    gptr<const float> x;   // (N, C, H, W)
    gptr<float> y;         // (N, C, OH, OW)
    gptr<int> arg;         // (N, C, OH, OW) max pooling: index iy * W + ix of the max
    gptr<const float> dy;  // (N, C, OH, OW)
    gptr<float> dx;        // (N, C, H, W)
    int n, c, h, w_in, oh, ow, k, s;
    int max;               // 1: max pooling, 0: average
    int act;               // backward: activation whose output x holds
};

// activation_forward: y = act(y) in place.
struct ActArgs {
    gptr<float> y;
    int len;
    int act;
};

// linear_forward, linear_backward_input, linear_backward_weight.
struct LinearArgs {
    gptr<const float> x;   // (N, F_IN)
    gptr<const float> w;   // (F_OUT, F_IN)
    gptr<const float> b;   // (F_OUT)
    gptr<float> y;         // (N, F_OUT)
    gptr<const float> dy;  // (N, F_OUT) dL/d(pre-activation output)
    gptr<float> dx;        // (N, F_IN)
    gptr<float> dw;        // (F_OUT, F_IN)
    gptr<float> db;        // (F_OUT)
    int n, f_in, f_out;
    int act;               // as in ConvArgs
};

// softmax_cross_entropy: loss and dL/dlogits of a batch.
struct LossArgs {
    gptr<const float> logits;  // (N, CLASSES)
    gptr<const int> labels;    // (N)
    gptr<float> dlogits;       // (N, CLASSES) out
    gptr<float> losses;        // out: losses[slot] = mean loss of the batch
    int n, classes, slot;
    float scale;               // dL/dlogits scale, 1 / N for the batch mean
};

// adam_update: one Adam step; the scalars come from lenet-core's
// Adam::scalars.
struct AdamArgs {
    gptr<float> p;
    gptr<const float> g;
    gptr<float> m;
    gptr<float> v;
    int len;
    float step_size, bc2_sqrt, w1, w2, beta2, eps, weight_decay;
};

// sgd_update: one SGD step (momentum buffer `buf`).
struct SgdArgs {
    gptr<float> p;
    gptr<const float> g;
    gptr<float> buf;
    int len;
    float lr, momentum, weight_decay;
    int first;  // 1 on the first step
    int pad_;
};

// upsample_forward, upsample_backward: bilinear, align_corners=False.
struct UpsampleArgs {
    gptr<const float> x;   // (N, C, H, W)
    gptr<float> y;         // (N, C, OH, OW)
    gptr<const float> dy;  // (N, C, OH, OW)
    gptr<float> dx;        // (N, C, H, W)
    int n, c, h, w_in, oh, ow;
    int act;               // backward: activation whose output x holds
    int pad_;
};

// dropout_forward, dropout_backward: the noise of lenet-core's
// dropout::mask(seed, step, layer, index, p).
struct DropoutArgs {
    gptr<const float> x;      // (N, F) the layer's input
    gptr<float> y;            // (N, F) forward output
    gptr<const float> dy;     // (N, F)
    gptr<float> dx;           // (N, F)
    unsigned long long seed;  // TrainerConfig::dropout_seed
    unsigned long long step;  // optimizer steps taken before this one
    unsigned int layer;       // index of the Dropout in the layer list
    unsigned int threshold;   // dropout::threshold(p): bits below it drop
    float scale;              // dropout::scale(p) = 1 / (1 - p)
    int len;                  // N * F
    int act;                  // backward: activation whose output x holds
    int pad_;
};

// Index of this thread in a 1-D grid.
__device__ __forceinline__ int global_index() {
    return (int)(blockIdx.x * blockDim.x + threadIdx.x);
}
