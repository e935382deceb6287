// A register-tiled matrix product for the kernels whose work is one:
// C[m][n] = sum_k A(m, k) * B(k, n), with A and B read from global memory
// in either orientation.
//
// One block of GEMM_THREADS threads computes a BM x BN tile of C (a tile
// configuration C, below): it walks K in steps of BK, each step staging a
// BK x BM slice of A and a BK x BN slice of B in shared memory (loaded
// coalesced: neighbouring threads read neighbouring addresses, whichever
// index is contiguous), then every thread accumulates its TM x TN outputs
// from registers: per k, TM / 4 + TN / 4 vector (float4) shared loads feed
// TM * TN fused multiply-adds. The slices are double-buffered: while the
// block multiplies one, each thread holds its share of the next in
// registers (loaded from global memory before the multiply-adds, stored to
// the other buffer after them), so one barrier per step suffices and the
// loads' latency hides behind the arithmetic. Each output's sum runs
// k = 0, 1, ..., K - 1 in order, one fmaf per term, so the result does not
// depend on thread timing or on the tile configuration (and the emulator's
// fmaf gives the GPU's bits).
//
// A thread's TM rows are TM / 4 groups of 4 consecutive rows, the groups
// BM * 4 / TM rows apart (likewise its columns): with ty = t / (BN / TN),
// tx = t % (BN / TN), acc[i][j] is C[row(i)][col(j)] with
// row(i) = m0 + i / 4 * (BM * 4 / TM) + 4 ty + i % 4 and
// col(j) = n0 + j / 4 * (BN * 4 / TN) + 4 tx + j % 4. Each group of 4 is
// one float4 in shared memory, and the 16 threads along a row of the
// thread grid read 16 neighbouring float4s.
#pragma once

#include "lenet.cuh"

// act_apply out of line, for the GEMM epilogues: inlined for each of a
// thread's 16 or 64 outputs it would make up most of their code.
__device__ __noinline__ float act_apply_outlined(int act, float x) {
    return act_apply(act, x);
}

// Threads per block of every GEMM kernel.
#define GEMM_THREADS 256

// A tile configuration: a BM x BN block tile, TM x TN outputs per thread,
// BK steps of K per shared slice. Square tiles only (BM == BN): both
// operands' slices then have the same shape.
template <int BM_, int TM_, int BK_>
struct GemmConfig {
    static constexpr int BM = BM_;
    static constexpr int BN = BM_;
    static constexpr int TM = TM_;
    static constexpr int TN = TM_;
    static constexpr int BK = BK_;
    // Threads along a row of the thread grid (columns of C).
    static constexpr int TX = BN / TN;
    // Rows between a thread's groups of 4 rows (or columns).
    static constexpr int GROUP = BM * 4 / TM;
    // Shared rows are padded by 4 floats: a staging store of 16 threads
    // along k then hits several banks instead of one, and rows stay
    // 16-byte aligned for the float4 loads.
    static constexpr int LD = BM + 4;
    // One slice of one operand in shared memory: s[kk * LD + r].
    static constexpr int SLICE = BK * LD;
    // Elements of a slice each thread stages.
    static constexpr int PER_THREAD = BK * BM / GEMM_THREADS;
    static_assert((BM / TM) * (BN / TN) == GEMM_THREADS, "one output tile per thread");
    static_assert(TM % 4 == 0, "rows in groups of 4 (float4)");
    static_assert(PER_THREAD * GEMM_THREADS == BK * BM, "slices divide among the threads");
};

// 64 x 64 tiles, 4 x 4 outputs per thread: for small products, where
// larger tiles would be mostly empty or too few to fill the GPU.
typedef GemmConfig<64, 4, 16> GemmSmall;
// 128 x 128 tiles, 8 x 8 outputs per thread: for large products; per k,
// 4 float4 shared loads feed 64 fused multiply-adds.
typedef GemmConfig<128, 8, 16> GemmLarge;

// Both buffers of one operand's slices.
template <class C>
using GemmSlices = shared_array<float, 2 * C::SLICE>;

// A stager moves one operand's slice for a step of K into shared memory:
// s[kk][r] for its BM rows from r0 and k in [k0, k0 + BK), zeros outside
// the operand (rows beyond its count, k beyond the depth), in two halves:
// `fetch(k0)` loads the thread's share into registers, `store(s, at)`
// writes them to the slice at offset `at`. `next(k1)` runs while the block
// multiplies, before the barrier that ends the step: a stager that keeps a
// shared table of a coming slice (read by `fetch(k1)`, after that barrier)
// fills it there. Both are called for k0 = 0, BK, 2 BK, ... in order (a
// stager may count instead of dividing).

// A matrix in global memory: element (r, k) at base[r * ld + k] when
// K_CONTIG, else at base[k * ld + r]. Neighbouring threads take
// neighbouring k when k is contiguous, neighbouring rows otherwise
// (coalesced loads). Either way one index of a thread's elements is the
// same for all of them (its k, or its row), so `init` resolves it once
// and a step only adds k0 and the element's stride.
template <class C, bool K_CONTIG>
struct MatrixStager {
    // Element q of a thread t is e = t + q * GEMM_THREADS of the slice:
    // k = e % BK, row = e / BK when K_CONTIG; k = e / BM, row = e % BM
    // else.
    static constexpr int STEP = K_CONTIG ? GEMM_THREADS / C::BK : GEMM_THREADS / C::BM;
    gptr<const float> base;  // at (row, k) of the thread's element 0
    long long stride;        // elements between its elements q and q + 1
    int ld;
    int rows_left;           // its rows until the end, minus its first
    int depth_left;          // its k until the depth, minus its first
    float reg[C::PER_THREAD];

    __device__ __forceinline__ void init(gptr<const float> m, int ld, int r0, int rows, int depth) {
        int t = (int)threadIdx.x;
        int r = r0 + (K_CONTIG ? t / C::BK : t % C::BM);
        int k = K_CONTIG ? t % C::BK : t / C::BM;
        base = m + (K_CONTIG ? (long long)r * ld + k : (long long)k * ld + r);
        stride = (long long)STEP * ld;
        this->ld = ld;
        rows_left = rows - r;
        depth_left = depth - k;
    }
    __device__ __forceinline__ void fetch(int k0) {
        gptr<const float> p = base + (K_CONTIG ? (long long)k0 : (long long)k0 * ld);
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            bool in = K_CONTIG ? q * STEP < rows_left && k0 < depth_left
                               : 0 < rows_left && k0 + q * STEP < depth_left;
            reg[q] = in ? (float)p[q * stride] : 0.0f;
        }
    }
    __device__ __forceinline__ void store(GemmSlices<C>& s, int at) const {
        int t = (int)threadIdx.x;
        int kk = K_CONTIG ? t % C::BK : t / C::BM;
        int rr = K_CONTIG ? t / C::BK : t % C::BM;
#pragma unroll
        for (int q = 0; q < C::PER_THREAD; q++) {
            s[at + (kk + (K_CONTIG ? 0 : q * STEP)) * C::LD + rr + (K_CONTIG ? q * STEP : 0)] = reg[q];
        }
    }
    __device__ __forceinline__ void next(int) {}
};

// The block's tile of C = A B, A's rows by B's rows (B given as its
// transpose, N x K), through the stagers `a` and `b`: acc[i][j] is the
// output at row(i), col(j) of the thread (see the top of the file).
// Every thread of the block must call it.
template <class C, class StagerA, class StagerB>
__device__ __forceinline__ void gemm_tile(StagerA& a, StagerB& b, int depth,
                                          float acc[C::TM][C::TN]) {
    __shared__ GemmSlices<C> sa;
    __shared__ GemmSlices<C> sb;
    int t = (int)threadIdx.x;
    int ra0 = t / C::TX * 4;
    int rb0 = t % C::TX * 4;
#pragma unroll
    for (int i = 0; i < C::TM; i++) {
#pragma unroll
        for (int j = 0; j < C::TN; j++) {
            acc[i][j] = 0.0f;
        }
    }
    a.next(0);
    b.next(0);
    __syncthreads();
    if (depth > 0) {
        a.fetch(0);
        b.fetch(0);
        a.store(sa, 0);
        b.store(sb, 0);
    }
    a.next(C::BK);
    b.next(C::BK);
    __syncthreads();
    for (int k0 = 0; k0 < depth; k0 += C::BK) {
        int cur = (k0 / C::BK & 1) * C::SLICE;
        // The next slice into registers (zeros past the depth: its stores
        // go to the buffer no one reads any more).
        a.fetch(k0 + C::BK);
        b.fetch(k0 + C::BK);
#pragma unroll
        for (int kk = 0; kk < C::BK; kk++) {
            float ra[C::TM], rb[C::TN];
#pragma unroll
            for (int g = 0; g < C::TM / 4; g++) {
                float4 v = sa.load4(cur + kk * C::LD + g * C::GROUP + ra0);
                ra[4 * g] = v.x;
                ra[4 * g + 1] = v.y;
                ra[4 * g + 2] = v.z;
                ra[4 * g + 3] = v.w;
            }
#pragma unroll
            for (int g = 0; g < C::TN / 4; g++) {
                float4 v = sb.load4(cur + kk * C::LD + g * C::GROUP + rb0);
                rb[4 * g] = v.x;
                rb[4 * g + 1] = v.y;
                rb[4 * g + 2] = v.z;
                rb[4 * g + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < C::TM; i++) {
#pragma unroll
                for (int j = 0; j < C::TN; j++) {
                    acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
                }
            }
        }
        a.store(sa, C::SLICE - cur);
        b.store(sb, C::SLICE - cur);
        a.next(k0 + 2 * C::BK);
        b.next(k0 + 2 * C::BK);
        __syncthreads();
    }
}

// Where a block's tile and a thread's outputs lie in C: tile `tile` of a
// grid of ceil(n / BN) column tiles per row of tiles.
template <class C>
struct GemmPlace {
    int m0, n0;  // the tile's first row and column
    int ty4, tx4;

    __device__ __forceinline__ GemmPlace(int tile, int n) {
        int tiles = (n + C::BN - 1) / C::BN;
        int t = (int)threadIdx.x;
        m0 = tile / tiles * C::BM;
        n0 = tile % tiles * C::BN;
        ty4 = t / C::TX * 4;
        tx4 = t % C::TX * 4;
    }
    // The row of acc[i][..] and the column of acc[..][j].
    __device__ __forceinline__ int row(int i) const { return m0 + i / 4 * C::GROUP + ty4 + i % 4; }
    __device__ __forceinline__ int col(int j) const { return n0 + j / 4 * C::GROUP + tx4 + j % 4; }
};
