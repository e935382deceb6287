// The emulated CUDA device's scheduler and the table of kernels: every
// kernel source is compiled here, for the CPU, with cuda_emu.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../activation.cu"
#include "../conv2d.cu"
#include "../data.cu"
#include "../dropout.cu"
#include "../linear.cu"
#include "../loss.cu"
#include "../optim.cu"
#include "../pool.cu"
#include "../resize.cu"

// Two kernels that only test the emulator: a block sum with its barrier,
// and the same sum without it, whose result depends on the thread order.
struct SelftestArgs {
    const float* x;
    float* out;
};

extern "C" __global__ void selftest_sum(const SelftestArgs a) {
    __shared__ float s[64];
    s[threadIdx.x] = a.x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (unsigned i = 0; i < blockDim.x; i++) {
            t += s[i];
        }
        *a.out = t;
    }
}

extern "C" __global__ void selftest_racy_sum(const SelftestArgs a) {
    __shared__ float s[64];
    s[threadIdx.x] = a.x[threadIdx.x];
    // (the barrier is missing here)
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (unsigned i = 0; i < blockDim.x; i++) {
            t += s[i];
        }
        *a.out = t;
    }
}

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace {

typedef void (*Call)(const void* args);

template <class A, void (*F)(A)>
void call(const void* args) {
    F(*static_cast<const A*>(args));
}

struct Entry {
    const char* name;
    Call call;
    size_t args_size;
    bool barriers;  // calls __syncthreads: its threads run as fibers
};

#define KERNEL(f, A, barriers) {#f, call<A, f>, sizeof(A), barriers}
const Entry KERNELS[] = {
    KERNEL(gather_batch, GatherArgs, false),
    KERNEL(conv2d_forward, ConvArgs, false),
    KERNEL(conv2d_backward_input, ConvArgs, false),
    KERNEL(conv2d_backward_weight, ConvArgs, true),
    KERNEL(pool_forward, PoolArgs, false),
    KERNEL(pool_backward, PoolArgs, false),
    KERNEL(activation_forward, ActArgs, false),
    KERNEL(linear_forward, LinearArgs, false),
    KERNEL(linear_backward_input, LinearArgs, false),
    KERNEL(linear_backward_weight, LinearArgs, false),
    KERNEL(softmax_cross_entropy, LossArgs, true),
    KERNEL(adam_update, AdamArgs, false),
    KERNEL(sgd_update, SgdArgs, false),
    KERNEL(upsample_forward, UpsampleArgs, false),
    KERNEL(upsample_backward, UpsampleArgs, false),
    KERNEL(dropout_forward, DropoutArgs, false),
    KERNEL(dropout_backward, DropoutArgs, false),
    KERNEL(selftest_sum, SelftestArgs, true),
    KERNEL(selftest_racy_sum, SelftestArgs, false),
};
const int NUM_KERNELS = sizeof(KERNELS) / sizeof(KERNELS[0]);

// ---- fibers -------------------------------------------------------------
// A fiber switch saves the callee-saved registers and the stack pointer of
// one context and restores another's (x86-64 System V), a few nanoseconds,
// where ucontext's swapcontext makes a system call.

#if defined(__x86_64__)
extern "C" void lenet_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl lenet_emu_switch
    .type lenet_emu_switch, @function
lenet_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lenet_emu_switch, .-lenet_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#else
#error "the CUDA emulator's fibers are written for x86-64"
#endif

const size_t STACK_BYTES = 16 * 1024;

struct Fiber {
    void* sp;
    char* stack;
    bool done;
    dim3 tid;
};

struct Scheduler {
    std::vector<Fiber> fibers;
    void* sched_sp;
    int current;
    const Entry* entry;
    const void* args;
    bool in_fiber;
    bool no_barriers_here;  // set while a kernel without barriers runs
    const char* error;
};

thread_local Scheduler S;

void fiber_main() {
    Fiber& f = S.fibers[S.current];
    S.entry->call(S.args);
    f.done = true;
    lenet_emu_switch(&f.sp, S.sched_sp);
    abort();  // a finished fiber is never resumed
}

void fiber_start(Fiber& f) {
    if (!f.stack) {
        f.stack = static_cast<char*>(aligned_alloc(16, STACK_BYTES));
    }
    // Stack top, 16-byte aligned: the entry address at top - 16 (so that
    // fiber_main starts with rsp = 8 mod 16, as after a call), six zeroed
    // callee-saved registers below it.
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + STACK_BYTES) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top - 16);
    sp[0] = reinterpret_cast<void*>(&fiber_main);
    sp[1] = nullptr;
    sp -= 6;
    for (int r = 0; r < 6; r++) {
        sp[r] = nullptr;
    }
    f.sp = sp;
    f.done = false;
}

// Thread ids in the order the scheduler runs them: 0 ascending,
// 1 descending, 2 a permutation drawn from `seed` (drawn anew per phase).
void make_order(std::vector<int>& order, int mode, uint64_t& seed) {
    int n = (int)order.size();
    for (int i = 0; i < n; i++) {
        order[i] = mode == 1 ? n - 1 - i : i;
    }
    if (mode == 2) {
        for (int i = n - 1; i > 0; i--) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            int j = (int)((seed >> 33) % (uint64_t)(i + 1));
            std::swap(order[i], order[j]);
        }
    }
}

dim3 unflatten(int t, dim3 b) {
    dim3 d;
    d.x = (unsigned)t % b.x;
    d.y = ((unsigned)t / b.x) % b.y;
    d.z = (unsigned)t / (b.x * b.y);
    return d;
}

}  // namespace

void __syncthreads() {
    if (!S.in_fiber) {
        S.error = "__syncthreads in a kernel registered without barriers";
        // Cannot switch away: the thread is on the scheduler's stack. The
        // launch reports the error when the kernel returns.
        return;
    }
    Fiber& f = S.fibers[S.current];
    lenet_emu_switch(&f.sp, S.sched_sp);
}

extern "C" {

// Index of the kernel named `name`, or -1.
int lenet_emu_find(const char* name) {
    for (int i = 0; i < NUM_KERNELS; i++) {
        if (strcmp(KERNELS[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

// sizeof the argument struct of kernel `k` (for the Rust mirror's test).
size_t lenet_emu_args_size(int k) {
    return k >= 0 && k < NUM_KERNELS ? KERNELS[k].args_size : 0;
}

// Runs kernel `k` over the grid; returns 0, or writes a message to
// err[0..err_len) and returns 1.
int lenet_emu_launch(int k, const unsigned* grid, const unsigned* block, const void* args,
                     int order_mode, uint64_t seed, char* err, size_t err_len) {
    if (k < 0 || k >= NUM_KERNELS) {
        snprintf(err, err_len, "no kernel %d", k);
        return 1;
    }
    const Entry& e = KERNELS[k];
    dim3 g = {grid[0], grid[1], grid[2]};
    dim3 b = {block[0], block[1], block[2]};
    long threads = (long)b.x * b.y * b.z;
    if (threads < 1 || threads > 1024 || g.x < 1 || g.y < 1 || g.z < 1) {
        snprintf(err, err_len, "%s: invalid launch geometry (%u,%u,%u) x (%u,%u,%u)", e.name, g.x,
                 g.y, g.z, b.x, b.y, b.z);
        return 1;
    }
    S.entry = &e;
    S.args = args;
    S.error = nullptr;
    gridDim = g;
    blockDim = b;
    std::vector<int> order((size_t)threads);
    if (S.fibers.size() < (size_t)threads) {
        S.fibers.resize((size_t)threads, Fiber{nullptr, nullptr, true, {0, 0, 0}});
    }
    long blocks = (long)g.x * g.y * g.z;
    for (long bi = 0; bi < blocks; bi++) {
        blockIdx.x = (unsigned)(bi % g.x);
        blockIdx.y = (unsigned)((bi / g.x) % g.y);
        blockIdx.z = (unsigned)(bi / ((long)g.x * g.y));
        if (!e.barriers) {
            make_order(order, order_mode, seed);
            S.in_fiber = false;
            for (int t : order) {
                threadIdx = unflatten(t, b);
                e.call(args);
            }
            if (S.error) {
                snprintf(err, err_len, "%s: %s", e.name, S.error);
                return 1;
            }
            continue;
        }
        for (long t = 0; t < threads; t++) {
            fiber_start(S.fibers[t]);
            S.fibers[t].tid = unflatten((int)t, b);
        }
        // Phases: run every live thread to its next barrier or its end.
        long live = threads;
        while (live > 0) {
            make_order(order, order_mode, seed);
            long finished = 0;
            S.in_fiber = true;
            for (int t : order) {
                Fiber& f = S.fibers[t];
                if (f.done) {
                    continue;
                }
                S.current = t;
                threadIdx = f.tid;
                lenet_emu_switch(&S.sched_sp, f.sp);
                if (f.done) {
                    finished++;
                }
            }
            S.in_fiber = false;
            if (finished != 0 && finished != live) {
                snprintf(err, err_len,
                         "%s: block (%u,%u,%u): %ld of %ld threads ended while the others wait "
                         "at __syncthreads",
                         e.name, blockIdx.x, blockIdx.y, blockIdx.z, finished, live);
                // Let the waiting threads run out so no fiber is left mid-kernel.
                return 1;
            }
            live -= finished;
        }
    }
    return 0;
}

}  // extern "C"
