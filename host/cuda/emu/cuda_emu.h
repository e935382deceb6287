// The CUDA execution model on the CPU, for tests: lets the kernels in
// host/cuda/*.cu compile with a C++ compiler and run on the host, so that
// the CUDA trainer can be checked where there is no GPU.
//
// Modelled: 1-D to 3-D grids and blocks (threadIdx, blockIdx, blockDim,
// gridDim), __shared__ memory (one copy per block: blocks run one after
// another), and __syncthreads (every thread of a block is a fiber; a
// barrier switches back to the scheduler, which resumes the threads in a
// chosen order once all of them have arrived). Blocks run one after
// another; the threads of a block run in ascending, descending or a seeded
// random order, so that a missing barrier or a write race changes results
// between orders. Not modelled: warps (no shuffles or warp-synchronous
// code), atomics, streams, timing.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>

struct dim3 {
    unsigned x, y, z;
};

// The running thread's coordinates, set by the scheduler before it resumes
// a thread.
extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

// Waits until every thread of the block has arrived.
void __syncthreads();

#define __global__
#define __device__
#define __forceinline__ inline
// One copy per OS thread: the emulator runs one block at a time on it.
#define __shared__ static thread_local
