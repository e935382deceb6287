// The CUDA execution model on the CPU, for tests: lets the kernels in
// host/cuda/*.cu compile with a C++ compiler and run on the host, so that
// the CUDA trainer can be checked where there is no GPU.
//
// Modelled: 1-D to 3-D grids and blocks (threadIdx, blockIdx, blockDim,
// gridDim), __shared__ memory (fresh for every block), and __syncthreads
// (every thread of a block is a fiber; a barrier switches back to the
// scheduler, which resumes the threads in a chosen order once all of them
// have arrived). Blocks run one after another, and both the blocks of a
// grid and the threads of a block run in ascending, descending or a seeded
// random order, so that a missing barrier, a write race or a dependence
// between blocks changes results between orders. Not modelled: warps (no
// shuffles or warp-synchronous code), atomics, streams, timing.
//
// The checks compute-sanitizer makes on a GPU, made on every access:
//
// - memcheck: global memory is reached only through gptr<T> (a checked
//   pointer, a plain T* on the GPU); every access is looked up in the
//   device's allocations, each surrounded by a guard zone, and one outside
//   every allocation is an error naming the kernel, block, thread,
//   allocation and offset. shared_array<T, N> checks its index.
// - initcheck: fresh allocations and each block's shared memory hold a
//   poison pattern (all bits set: NaN as a float) and a shadow of which
//   bytes were written; reading a byte nobody wrote is an error.
// - racecheck: two threads of a block touching the same shared-memory
//   element between two barriers, at least one of them writing, is an
//   error naming both threads (even when the values written are equal).
//
// The first error of a launch is reported (with the number of others) when
// the block it happened in has finished; the access itself is redirected
// to a scratch word, so a wild write never lands in memory.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct dim3 {
    unsigned x, y, z;
};

// CUDA's vector of four floats (16-byte aligned on the GPU).
struct float4 {
    float x, y, z, w;
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
#define __noinline__ __attribute__((noinline))
// One copy per OS thread: the emulator runs one block at a time on it, and
// shared_array starts every block afresh.
#define __shared__ static thread_local

// ---- the scheduler's side of the checks (emu.cpp) -----------------------

// The address to access for `bytes` at global address `p`: `p` itself when
// the bytes lie inside one allocation (and, for a read, were all written),
// else a scratch word, after recording the error. A write marks the bytes
// written.
void* lenet_emu_global(const void* p, size_t bytes, bool write);
// A serial number of the running block and of the running phase (the
// stretch between two barriers), unique over all launches of this OS
// thread; the running thread's index in its block.
uint64_t lenet_emu_block_serial();
uint64_t lenet_emu_phase();
int lenet_emu_thread();
// Records an error of the running thread (memcheck, initcheck, racecheck).
void lenet_emu_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- global memory: checked pointers ------------------------------------

template <class T>
struct remove_const_t_ {
    typedef T type;
    static const bool is_const = false;
};
template <class T>
struct remove_const_t_<const T> {
    typedef T type;
    static const bool is_const = true;
};

// A reference to one value in global memory: reading it converts, writing
// assigns; both go through lenet_emu_global.
template <class T>
struct gref {
    typedef typename remove_const_t_<T>::type V;
    T* p;

    operator V() const {
        V v;
        memcpy(&v, lenet_emu_global(p, sizeof(V), false), sizeof(V));
        return v;
    }
    gref& operator=(V v) {
        static_assert(!remove_const_t_<T>::is_const, "a write through a pointer to const");
        memcpy(lenet_emu_global(p, sizeof(V), true), &v, sizeof(V));
        return *this;
    }
    gref& operator=(const gref& o) { return *this = V(o); }
    gref& operator+=(V v) { return *this = V(*this) + v; }
    gref& operator-=(V v) { return *this = V(*this) - v; }
};

// A pointer to global memory, the size and layout of T* (the argument
// structs are shared with the GPU and with Rust).
template <class T>
struct gptr {
    T* p;

    template <class I>
    gref<T> operator[](I i) const {
        return gref<T>{p + (ptrdiff_t)i};
    }
    gref<T> operator*() const { return gref<T>{p}; }
    template <class I>
    gptr operator+(I i) const {
        return gptr{p + (ptrdiff_t)i};
    }
    explicit operator bool() const { return p != nullptr; }
    // To a pointer to const (as T* converts to const T*).
    template <class U>
    operator gptr<U>() const {
        return gptr<U>{p};
    }
};

// ---- shared memory ------------------------------------------------------

// What the checks keep per element of a shared array.
struct shared_state {
    uint64_t phase;  // the phase of the accesses below
    int32_t writer;  // thread that wrote in that phase, or -1
    int32_t reader;  // thread that read in that phase, -1 none, -2 several
    int32_t init;    // written in this block
    int32_t pad_;
};

// Checks access `i` (write or not) of a shared array of `n` elements of
// `elem` bytes whose state is `st`; returns false when `i` is outside it.
bool lenet_emu_shared(shared_state* st, long i, long n, size_t elem, bool write);

template <class T>
struct sref {
    T* v;
    shared_state* st;
    long i, n;

    operator T() const {
        return lenet_emu_shared(st, i, n, sizeof(T), false) ? v[i] : scratch();
    }
    sref& operator=(T x) {
        if (lenet_emu_shared(st, i, n, sizeof(T), true)) {
            v[i] = x;
        }
        return *this;
    }
    sref& operator=(const sref& o) { return *this = T(o); }
    sref& operator+=(T x) { return *this = T(*this) + x; }
    static T scratch() {
        T t;
        memset(&t, 0xff, sizeof(T));
        return t;
    }
};

// N elements of block-shared memory. Zero-initialized as a static (a
// thread_local: every kernel's arrays would otherwise take their size
// from each OS thread's stack, where glibc keeps thread-local storage), its
// elements allocated on the heap the first time a thread touches it and
// reset to the poison pattern, unwritten, the first time each block does.
template <class T, int N>
struct shared_array {
    T* v;
    shared_state* st;
    uint64_t block;

    ~shared_array() {
        delete[] v;
        delete[] st;
    }
    template <class I>
    sref<T> operator[](I i) {
        uint64_t b = lenet_emu_block_serial();
        if (block != b) {
            if (!v) {
                v = new T[N];
                st = new shared_state[N];
            }
            block = b;
            memset(static_cast<void*>(v), 0xff, sizeof(T) * N);
            for (int k = 0; k < N; k++) {
                st[k] = shared_state{0, -1, -1, 0, 0};
            }
        }
        return sref<T>{v, st, (long)i, N};
    }
    // Elements i..i+3 as one vector load (T = float), which the GPU makes
    // only from a 16-byte aligned address: i must be a multiple of 4.
    template <class I>
    float4 load4(I i) {
        if ((long)i % 4 != 0) {
            lenet_emu_error("memcheck: vector shared load at index %ld, not a multiple of 4", (long)i);
        }
        return float4{(*this)[i], (*this)[i + 1], (*this)[i + 2], (*this)[i + 3]};
    }
};
