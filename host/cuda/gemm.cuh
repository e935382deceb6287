// A register-tiled matrix product for the kernels whose work is one:
// C[m][n] = sum_k A(m, k) * B(k, n), with A and B read from global memory
// in either orientation.
//
// One block of GEMM_THREADS threads computes a GEMM_BM x GEMM_BN tile of C:
// it walks K in steps of GEMM_BK, each step staging a GEMM_BK x GEMM_BM
// slice of A and a GEMM_BK x GEMM_BN slice of B in shared memory (loaded
// coalesced: neighbouring threads read neighbouring addresses, whichever
// index is contiguous), then every thread accumulates its GEMM_TM x GEMM_TN
// outputs from registers: per k, 4 + 4 shared loads feed 16 fused
// multiply-adds. Each output's sum runs k = 0, 1, ..., K - 1 in order,
// one fmaf per term, so the result does not depend on thread timing (and
// the emulator's fmaf gives the GPU's bits).
#pragma once

#include "lenet.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_TM 4
#define GEMM_TN 4
#define GEMM_THREADS 256
// Shared rows are padded by 4 floats: a staging store of 16 threads along
// k then hits 8 banks instead of one, and rows stay 16-byte aligned.
#define GEMM_LD (GEMM_BM + 4)

// One operand: element (r, k) of an R x K matrix at base[r * ld + k]
// when K_CONTIG, else at base[k * ld + r].
struct GemmOperand {
    gptr<const float> base;
    int ld;
};

// Stages rows [r0, r0 + 64) x k [k0, k0 + GEMM_BK) of `o` (zeros outside
// R x K) into s[k][r].
template <bool K_CONTIG>
__device__ __forceinline__ void gemm_stage(shared_array<float, GEMM_BK * GEMM_LD>& s,
                                           const GemmOperand& o, int r0, int rows, int k0,
                                           int depth) {
    int t = (int)threadIdx.x;
#pragma unroll
    for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
        int e = t + q * GEMM_THREADS;
        // Neighbouring threads take neighbouring k when k is contiguous,
        // neighbouring rows otherwise.
        int kk = K_CONTIG ? e % GEMM_BK : e / GEMM_BM;
        int rr = K_CONTIG ? e / GEMM_BK : e % GEMM_BM;
        int r = r0 + rr;
        int k = k0 + kk;
        float v = 0.0f;
        if (r < rows && k < depth) {
            v = K_CONTIG ? o.base[(size_t)r * o.ld + k] : o.base[(size_t)k * o.ld + r];
        }
        s[kk * GEMM_LD + rr] = v;
    }
}

// The block's tile of C = A B (A: M x K, B: K x N as an N x K operand):
// acc[i][j] = C[m0 + 4 ty + i][n0 + 4 tx + j] with ty = t / 16, tx = t % 16.
// Every thread of the block must call it.
template <bool A_K_CONTIG, bool B_K_CONTIG>
__device__ __forceinline__ void gemm_tile(const GemmOperand& a, const GemmOperand& b, int m, int n,
                                          int depth, int m0, int n0,
                                          float acc[GEMM_TM][GEMM_TN]) {
    __shared__ shared_array<float, GEMM_BK * GEMM_LD> sa;
    __shared__ shared_array<float, GEMM_BK * GEMM_LD> sb;
    int t = (int)threadIdx.x;
    int ty = t / (GEMM_BN / GEMM_TN);
    int tx = t % (GEMM_BN / GEMM_TN);
    for (int i = 0; i < GEMM_TM; i++) {
        for (int j = 0; j < GEMM_TN; j++) {
            acc[i][j] = 0.0f;
        }
    }
    for (int k0 = 0; k0 < depth; k0 += GEMM_BK) {
        gemm_stage<A_K_CONTIG>(sa, a, m0, m, k0, depth);
        gemm_stage<B_K_CONTIG>(sb, b, n0, n, k0, depth);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk++) {
            float ra[GEMM_TM], rb[GEMM_TN];
            for (int i = 0; i < GEMM_TM; i++) {
                ra[i] = sa[kk * GEMM_LD + ty * GEMM_TM + i];
            }
            for (int j = 0; j < GEMM_TN; j++) {
                rb[j] = sb[kk * GEMM_LD + tx * GEMM_TN + j];
            }
            for (int i = 0; i < GEMM_TM; i++) {
                for (int j = 0; j < GEMM_TN; j++) {
                    acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }
}

// Tiles of an m x n product: the grid of a GEMM launch (times any extra
// blocks the kernel takes).
__device__ __forceinline__ int gemm_tiles_n(int n) { return (n + GEMM_BN - 1) / GEMM_BN; }
