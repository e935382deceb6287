// The emulated CUDA device's scheduler and the table of kernels: every
// kernel source is compiled here, for the CPU, with cuda_emu.h.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <new>
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

// Kernels that only test the emulator, each a bug its checks must report
// (see emu::selftest): over 64 threads per block, x holds 1..=64.
struct SelftestArgs {
    gptr<const float> x;
    gptr<float> out;
    int n;  // elements of out
    int pad_;
};

// A block sum with its barrier: correct.
extern "C" __global__ void selftest_sum(const SelftestArgs a) {
    __shared__ shared_array<float, 64> s;
    s[threadIdx.x] = a.x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (unsigned i = 0; i < blockDim.x; i++) {
            t += s[i];
        }
        a.out[blockIdx.x] = t;
    }
}

// The same sum without the barrier: thread 0 reads what the others write
// in the same phase (racecheck), or nothing yet (initcheck).
extern "C" __global__ void selftest_racy_sum(const SelftestArgs a) {
    __shared__ shared_array<float, 64> s;
    s[threadIdx.x] = a.x[threadIdx.x];
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (unsigned i = 0; i < blockDim.x; i++) {
            t += s[i];
        }
        a.out[blockIdx.x] = t;
    }
}

// Every thread writes the same value to one element between two
// barriers: a race even though the values are equal (racecheck).
extern "C" __global__ void selftest_equal_race(const SelftestArgs a) {
    __shared__ shared_array<float, 1> s;
    s[0] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        a.out[blockIdx.x] = s[0];
    }
}

// Only block 0 fills the shared array, the others read what a previous
// block left there (initcheck: each block's shared memory is fresh).
extern "C" __global__ void selftest_stale_shared(const SelftestArgs a) {
    __shared__ shared_array<float, 64> s;
    if (blockIdx.x == 0) {
        s[threadIdx.x] = a.x[threadIdx.x];
    }
    __syncthreads();
    a.out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
}

// Each thread writes one element, and the bounds test lets one thread
// past the end (memcheck).
extern "C" __global__ void selftest_past_end(const SelftestArgs a) {
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i > a.n) {
        return;
    }
    a.out[i] = a.x[i % 64];
}

// Block b > 0 adds to what block b - 1 wrote: right only when the blocks
// run in ascending order (in any other, initcheck or a wrong sum).
extern "C" __global__ void selftest_block_chain(const SelftestArgs a) {
    if (threadIdx.x == 0) {
        float prev = blockIdx.x == 0 ? 0.0f : (float)a.out[blockIdx.x - 1];
        a.out[blockIdx.x] = prev + 1.0f;
    }
}

// The real kernels with one planted bug each (build.rs writes them from
// the sources): planted_<bug>__<kernel>.
#include "planted.inc"

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
    KERNEL(conv2d_forward_gemm, ConvArgs, true),
    KERNEL(conv2d_forward_gemm_large, ConvArgs, true),
    KERNEL(conv2d_backward_input, ConvArgs, false),
    KERNEL(conv2d_backward_input_gemm, ConvArgs, true),
    KERNEL(conv2d_backward_input_gemm_large, ConvArgs, true),
    KERNEL(conv2d_backward_weight, ConvArgs, true),
    KERNEL(conv2d_backward_weight_gemm, ConvArgs, true),
    KERNEL(conv2d_backward_weight_gemm_large, ConvArgs, true),
    KERNEL(conv2d_backward_weight_reduce, ConvArgs, true),
    KERNEL(pool_forward, PoolArgs, false),
    KERNEL(pool_backward, PoolArgs, false),
    KERNEL(activation_forward, ActArgs, false),
    KERNEL(linear_forward, LinearArgs, true),
    KERNEL(linear_forward_large, LinearArgs, true),
    KERNEL(linear_backward_input, LinearArgs, true),
    KERNEL(linear_backward_input_large, LinearArgs, true),
    KERNEL(linear_backward_weight, LinearArgs, true),
    KERNEL(linear_backward_weight_large, LinearArgs, true),
    KERNEL(softmax_cross_entropy, LossArgs, true),
    KERNEL(adam_update, AdamArgs, false),
    KERNEL(sgd_update, SgdArgs, false),
    KERNEL(upsample_forward, UpsampleArgs, false),
    KERNEL(upsample_backward, UpsampleArgs, false),
    KERNEL(dropout_forward, DropoutArgs, false),
    KERNEL(dropout_backward, DropoutArgs, false),
    KERNEL(selftest_sum, SelftestArgs, true),
    KERNEL(selftest_racy_sum, SelftestArgs, false),
    KERNEL(selftest_equal_race, SelftestArgs, true),
    KERNEL(selftest_stale_shared, SelftestArgs, true),
    KERNEL(selftest_past_end, SelftestArgs, false),
    KERNEL(selftest_block_chain, SelftestArgs, false),
    PLANTED_KERNELS
};
const int NUM_KERNELS = sizeof(KERNELS) / sizeof(KERNELS[0]);

// ---- device memory ------------------------------------------------------
// Every allocation lives in its own storage with a guard zone of GUARD
// bytes on each side, so an access a little outside one lands in no
// allocation. A shadow byte per byte records whether it was written.

const size_t GUARD = 4096;

struct Alloc {
    uint64_t id;
    size_t bytes;
    char* base;  // the address handed out: GUARD bytes into `storage`
    std::vector<uint64_t> storage;
    std::vector<uint8_t> written;
};

}  // namespace

// The allocations of one emulated device.
struct lenet_emu_device {
    std::map<uintptr_t, Alloc*> allocs;  // by base address
    uint64_t next_id = 1;

    ~lenet_emu_device() {
        for (auto& kv : allocs) {
            delete kv.second;
        }
    }

    // The allocation holding [p, p + bytes), or null.
    Alloc* find(uintptr_t p, size_t bytes) const {
        auto it = allocs.upper_bound(p);
        if (it == allocs.begin()) {
            return nullptr;
        }
        --it;
        Alloc* a = it->second;
        uintptr_t off = p - it->first;
        return off <= a->bytes && bytes <= a->bytes - off ? a : nullptr;
    }

    // Where [p, p + bytes) lies, for a message: past the end of or before
    // the nearest allocation, or in none.
    void describe(uintptr_t p, size_t bytes, char* out, size_t len) const {
        auto it = allocs.upper_bound(p);
        if (it != allocs.begin()) {
            auto prev = std::prev(it);
            Alloc* a = prev->second;
            uintptr_t off = p - prev->first;
            if (off < a->bytes + GUARD) {
                if (off < a->bytes) {
                    snprintf(out, len, "at offset %zu of allocation #%llu (%zu bytes), running past its end",
                             (size_t)off, (unsigned long long)a->id, a->bytes);
                } else {
                    snprintf(out, len, "%zu bytes past the end of allocation #%llu (%zu bytes)",
                             (size_t)(off - a->bytes), (unsigned long long)a->id, a->bytes);
                }
                return;
            }
        }
        if (it != allocs.end() && it->first - p <= GUARD) {
            snprintf(out, len, "%zu bytes before allocation #%llu (%zu bytes)",
                     (size_t)(it->first - p), (unsigned long long)it->second->id,
                     it->second->bytes);
            return;
        }
        (void)bytes;
        snprintf(out, len, "in no allocation of this device");
    }
};

namespace {

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

const int CACHE = 4;

struct Scheduler {
    std::vector<Fiber> fibers;
    void* sched_sp;
    int current;  // the running thread's index in its block
    const Entry* entry;
    const void* args;
    bool in_fiber;
    lenet_emu_device* dev;
    Alloc* cache[CACHE];  // recently used allocations of `dev`
    int cache_next;
    uint64_t block_serial;
    uint64_t phase;
    long errors;
    char first_error[512];
    alignas(16) uint64_t scratch[2];
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

uint64_t next_random(uint64_t& seed) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return seed >> 33;
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
            int j = (int)(next_random(seed) % (uint64_t)(i + 1));
            std::swap(order[i], order[j]);
        }
    }
}

uint64_t gcd(uint64_t a, uint64_t b) {
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// The blocks' order: the k-th block to run is block (mul * k + add) mod n,
// a permutation when mul and n are coprime: the identity (ascending), the
// reversal (descending: mul = n - 1, add = n - 1) or one drawn from `seed`.
struct BlockOrder {
    uint64_t n, mul, add;

    BlockOrder(uint64_t blocks, int mode, uint64_t& seed) : n(blocks), mul(1), add(0) {
        if (mode == 1) {
            mul = n - 1;
            add = n - 1;
        } else if (mode == 2 && n > 2) {
            do {
                mul = 1 + next_random(seed) % (n - 1);
            } while (gcd(mul, n) != 1);
            add = next_random(seed) % n;
        }
        if (n == 1) {
            mul = 1;
            add = 0;
        }
    }
    uint64_t at(uint64_t k) const {
        return (uint64_t)(((unsigned __int128)mul * k + add) % n);
    }
};

dim3 unflatten(int t, dim3 b) {
    dim3 d;
    d.x = (unsigned)t % b.x;
    d.y = ((unsigned)t / b.x) % b.y;
    d.z = (unsigned)t / (b.x * b.y);
    return d;
}

// The launch's result: 0, or 1 with the first error (and the count of the
// others) in err.
int report(char* err, size_t err_len) {
    if (S.errors == 0) {
        return 0;
    }
    if (S.errors == 1) {
        snprintf(err, err_len, "%s", S.first_error);
    } else {
        snprintf(err, err_len, "%s (and %ld more errors in this launch)", S.first_error,
                 S.errors - 1);
    }
    return 1;
}

}  // namespace

void lenet_emu_error(const char* fmt, ...) {
    S.errors++;
    if (S.errors > 1) {
        return;
    }
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(S.first_error, sizeof(S.first_error), "%s block (%u,%u,%u) thread (%u,%u,%u): %s",
             S.entry ? S.entry->name : "?", blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x,
             threadIdx.y, threadIdx.z, what);
}

uint64_t lenet_emu_block_serial() { return S.block_serial; }
uint64_t lenet_emu_phase() { return S.phase; }
int lenet_emu_thread() { return S.current; }

void* lenet_emu_global(const void* p, size_t bytes, bool write) {
    uintptr_t at = reinterpret_cast<uintptr_t>(p);
    Alloc* a = nullptr;
    for (int c = 0; c < CACHE; c++) {
        Alloc* h = S.cache[c];
        if (h && at >= (uintptr_t)h->base && at - (uintptr_t)h->base <= h->bytes &&
            bytes <= h->bytes - (at - (uintptr_t)h->base)) {
            a = h;
            break;
        }
    }
    if (!a && S.dev) {
        a = S.dev->find(at, bytes);
        if (a) {
            S.cache[S.cache_next] = a;
            S.cache_next = (S.cache_next + 1) % CACHE;
        }
    }
    if (!a) {
        char where[160];
        if (S.dev) {
            S.dev->describe(at, bytes, where, sizeof(where));
        } else {
            snprintf(where, sizeof(where), "with no device");
        }
        lenet_emu_error("memcheck: %s of %zu bytes at %#lx, %s", write ? "write" : "read", bytes,
                        (unsigned long)at, where);
        memset(S.scratch, 0xff, sizeof(S.scratch));
        return S.scratch;
    }
    size_t off = at - (uintptr_t)a->base;
    uint8_t* w = a->written.data() + off;
    if (write) {
        memset(w, 1, bytes);
    } else {
        for (size_t i = 0; i < bytes; i++) {
            if (!w[i]) {
                lenet_emu_error(
                    "initcheck: read of %zu bytes at offset %zu of allocation #%llu (%zu bytes), "
                    "which nothing wrote",
                    bytes, off, (unsigned long long)a->id, a->bytes);
                break;
            }
        }
    }
    return a->base + off;
}

bool lenet_emu_shared(shared_state* st, long i, long n, size_t elem, bool write) {
    if (i < 0 || i >= n) {
        lenet_emu_error("memcheck: shared memory %s at index %ld of an array of %ld elements of %zu bytes",
                        write ? "write" : "read", i, n, elem);
        return false;
    }
    shared_state& s = st[i];
    int t = S.current;
    if (s.phase != S.phase) {
        s.phase = S.phase;
        s.writer = -1;
        s.reader = -1;
    }
    if (write) {
        if (s.writer >= 0 && s.writer != t) {
            lenet_emu_error(
                "racecheck: shared element %ld of %ld written by threads %d and %d between two "
                "barriers",
                i, n, s.writer, t);
        } else if (s.reader == -2 || (s.reader >= 0 && s.reader != t)) {
            lenet_emu_error(
                "racecheck: shared element %ld of %ld read by thread%s %d and written by thread "
                "%d between two barriers",
                i, n, s.reader == -2 ? "s other than" : "", s.reader == -2 ? t : s.reader, t);
        }
        s.writer = t;
        s.init = 1;
    } else {
        if (!s.init) {
            lenet_emu_error(
                "initcheck: shared element %ld of %ld read before any thread of this block wrote it",
                i, n);
        } else if (s.writer >= 0 && s.writer != t) {
            lenet_emu_error(
                "racecheck: shared element %ld of %ld written by thread %d and read by thread %d "
                "between two barriers",
                i, n, s.writer, t);
        }
        s.reader = s.reader == -1 || s.reader == t ? t : -2;
    }
    return true;
}

void __syncthreads() {
    if (!S.in_fiber) {
        lenet_emu_error("__syncthreads in a kernel registered without barriers");
        // Cannot switch away: the thread is on the scheduler's stack. The
        // launch reports the error when the block has run.
        return;
    }
    Fiber& f = S.fibers[S.current];
    lenet_emu_switch(&f.sp, S.sched_sp);
}

extern "C" {

// A new emulated device (its allocations); null when out of memory.
lenet_emu_device* lenet_emu_device_new() { return new (std::nothrow) lenet_emu_device(); }

// Frees the device and every allocation it still has.
void lenet_emu_device_free(lenet_emu_device* d) { delete d; }

// `bytes` bytes of device memory holding the poison pattern, unwritten;
// 0 when out of memory.
uint64_t lenet_emu_alloc(lenet_emu_device* d, size_t bytes) {
    Alloc* a = new (std::nothrow) Alloc();
    if (!a) {
        return 0;
    }
    try {
        size_t words = (bytes + 2 * GUARD + 7) / 8;
        a->storage.assign(words, ~uint64_t(0));
        a->written.assign(bytes ? bytes : 1, 0);
    } catch (...) {
        delete a;
        return 0;
    }
    a->id = d->next_id++;
    a->bytes = bytes;
    a->base = reinterpret_cast<char*>(a->storage.data()) + GUARD;
    d->allocs[reinterpret_cast<uintptr_t>(a->base)] = a;
    return reinterpret_cast<uint64_t>(a->base);
}

// Frees an allocation; 1 when `p` is not one.
int lenet_emu_dealloc(lenet_emu_device* d, uint64_t p) {
    auto it = d->allocs.find((uintptr_t)p);
    if (it == d->allocs.end()) {
        return 1;
    }
    for (int c = 0; c < CACHE; c++) {
        if (S.cache[c] == it->second) {
            S.cache[c] = nullptr;
        }
    }
    delete it->second;
    d->allocs.erase(it);
    return 0;
}

// Copies between host and device memory: `dir` 0 host to device (marks the
// bytes written), 1 device to host, 2 zero-fills `len` device bytes. 1 with
// a message when the device range is not inside one allocation.
int lenet_emu_copy(lenet_emu_device* d, int dir, uint64_t dev, void* host, size_t len, char* err,
                   size_t err_len) {
    Alloc* a = d->find((uintptr_t)dev, len);
    if (!a) {
        char where[160];
        d->describe((uintptr_t)dev, len, where, sizeof(where));
        snprintf(err, err_len, "%s of %zu bytes at %#llx: %s",
                 dir == 1 ? "copy to the host" : dir == 0 ? "copy to the device" : "memset", len,
                 (unsigned long long)dev, where);
        return 1;
    }
    size_t off = (size_t)(dev - (uint64_t)(uintptr_t)a->base);
    if (dir == 1) {
        memcpy(host, a->base + off, len);
    } else {
        if (dir == 0) {
            memcpy(a->base + off, host, len);
        } else {
            memset(a->base + off, 0, len);
        }
        memset(a->written.data() + off, 1, len);
    }
    return 0;
}

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

// Runs kernel `k` over the grid on device `d`, blocks and threads in the
// order `order_mode` (0 ascending, 1 descending, 2 drawn from `seed`);
// returns 0, or writes a message to err[0..err_len) and returns 1.
int lenet_emu_launch(lenet_emu_device* d, int k, const unsigned* grid, const unsigned* block,
                     const void* args, int order_mode, uint64_t seed, char* err, size_t err_len) {
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
    S.dev = d;
    for (int c = 0; c < CACHE; c++) {
        S.cache[c] = nullptr;
    }
    S.errors = 0;
    gridDim = g;
    blockDim = b;
    std::vector<int> order((size_t)threads);
    if (S.fibers.size() < (size_t)threads) {
        S.fibers.resize((size_t)threads, Fiber{nullptr, nullptr, true, {0, 0, 0}});
    }
    uint64_t blocks = (uint64_t)g.x * g.y * g.z;
    BlockOrder block_order(blocks, order_mode, seed);
    for (uint64_t kb = 0; kb < blocks; kb++) {
        uint64_t bi = block_order.at(kb);
        blockIdx.x = (unsigned)(bi % g.x);
        blockIdx.y = (unsigned)((bi / g.x) % g.y);
        blockIdx.z = (unsigned)(bi / ((uint64_t)g.x * g.y));
        S.block_serial++;
        if (!e.barriers) {
            make_order(order, order_mode, seed);
            S.phase++;
            S.in_fiber = false;
            for (int t : order) {
                S.current = t;
                threadIdx = unflatten(t, b);
                e.call(args);
            }
            if (report(err, err_len)) {
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
            S.phase++;
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
                // The waiting fibers are abandoned; fiber_start resets them
                // at the next launch.
                return 1;
            }
            live -= finished;
        }
        if (report(err, err_len)) {
            return 1;
        }
    }
    return 0;
}

}  // extern "C"
