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

// A stager fills one operand's shared slice for a step of K: s[k][r] for
// its 64 rows from r0 and k in [k0, k0 + GEMM_BK), zeros outside the
// operand (rows beyond its count, k beyond the depth). `next(k1)` runs
// while the block multiplies, before the barrier that ends the step: a
// stager that keeps a shared table of the coming slice fills it there.

// A matrix in global memory: element (r, k) at base[r * ld + k] when
// K_CONTIG, else at base[k * ld + r].
template <bool K_CONTIG>
struct MatrixStager {
    gptr<const float> base;
    int ld;
    int r0;
    int rows;
    int depth;

    __device__ __forceinline__ void stage(shared_array<float, GEMM_BK * GEMM_LD>& s, int k0) const {
        int t = (int)threadIdx.x;
#pragma unroll
        for (int q = 0; q < GEMM_BK * GEMM_BM / GEMM_THREADS; q++) {
            int e = t + q * GEMM_THREADS;
            // Neighbouring threads take neighbouring k when k is
            // contiguous, neighbouring rows otherwise (coalesced loads).
            int kk = K_CONTIG ? e % GEMM_BK : e / GEMM_BM;
            int rr = K_CONTIG ? e / GEMM_BK : e % GEMM_BM;
            int r = r0 + rr;
            int k = k0 + kk;
            float v = 0.0f;
            if (r < rows && k < depth) {
                v = K_CONTIG ? base[(size_t)r * ld + k] : base[(size_t)k * ld + r];
            }
            s[kk * GEMM_LD + rr] = v;
        }
    }
    __device__ __forceinline__ void next(int) const {}
};

// The block's tile of C = A B, A's rows by B's rows (B given as its
// transpose, N x K), through the stagers `a` and `b`:
// acc[i][j] = C[m0 + 4 ty + i][n0 + 4 tx + j] with ty = t / 16,
// tx = t % 16. Every thread of the block must call it.
template <class StagerA, class StagerB>
__device__ __forceinline__ void gemm_tile(const StagerA& a, const StagerB& b, int depth,
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
    a.next(0);
    b.next(0);
    __syncthreads();
    for (int k0 = 0; k0 < depth; k0 += GEMM_BK) {
        a.stage(sa, k0);
        b.stage(sb, k0);
        __syncthreads();
        a.next(k0 + GEMM_BK);
        b.next(k0 + GEMM_BK);
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

// Row and column of the first output of the block's tile, and of this
// thread's first output in it, on a grid of ceil(n / 64) column tiles.
struct GemmPlace {
    int m0, n0, r, c;
};

__device__ __forceinline__ GemmPlace gemm_place(int n) {
    int tiles = (n + GEMM_BN - 1) / GEMM_BN;
    int t = (int)threadIdx.x;
    GemmPlace g;
    g.m0 = (int)blockIdx.x / tiles * GEMM_BM;
    g.n0 = (int)blockIdx.x % tiles * GEMM_BN;
    g.r = g.m0 + t / (GEMM_BN / GEMM_TN) * GEMM_TM;
    g.c = g.n0 + t % (GEMM_BN / GEMM_TN) * GEMM_TN;
    return g;
}
