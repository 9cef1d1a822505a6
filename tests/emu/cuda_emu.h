// cuda_emu.h: compile a CUDA C++ kernel file with g++ and run it on the CPU with real block
// semantics, checked the way the hardware would fault or misbehave.
//
// - One OS thread per CUDA thread of a block.  Several blocks run AT ONCE (`concurrency` groups
//   of threads, each with its own barrier, warp exchange and shared memory), in a shuffled block
//   order, so a kernel whose blocks depend on each other's order, or write the same output,
//   shows up (wrong numbers, or a ThreadSanitizer race report).
// - threadIdx / blockIdx are thread-local; blockDim / gridDim are set before the threads start.
// - __syncthreads() is a real barrier (mutex + condition variable, which TSan understands) that
//   also knows WHERE each thread calls it: a thread that arrives at another __syncthreads (or
//   ends its block) while the others wait at one is a fault ("divergent barrier"), as is a
//   barrier nobody completes within a minute (a hang on a GPU).
// - Shared memory is the launch's dynamic shared memory only (GL_DYNAMIC_SHARED), a fresh
//   allocation per block filled with garbage (NaN bytes, or huge finite values on alternate
//   blocks): a read of an element the block never wrote poisons the results.  A static
//   `__shared__` array does not compile here (it would be one array for all running blocks).
// - Every 16-byte vector access (gl_load16 / gl_store16 / gl_cp_async16) asserts 16-byte
//   alignment and that all 16 bytes lie inside one global buffer the driver registered or the
//   block's shared memory; otherwise a fault (a misaligned-address or illegal-address error on
//   a GPU).  Scalar accesses are checked by guard zones around the global buffers (the driver's)
//   and, in the AddressSanitizer build (EMU_ASAN), by ASan itself.
// - cp.async is asynchronous as far as a correct kernel can tell: at issue the destination is
//   overwritten with garbage (a write TSan sees, racing with any reader that a missing barrier
//   leaves behind), the real 16 bytes land when the issuing thread's gl_cp_async_wait<N> retires
//   the group (so a read before the wait sees garbage), and copies never waited for at the end
//   of the block are a fault.
// - __shfl_down_sync / __shfl_xor_sync go through a per-warp exchange buffer between two warp
//   barriers (all 32 lanes, or the block's tail warp, must call them, as on a GPU).
// A fault prints "EMU FAULT: ..." and exits with code 67 (guard zones: 68, see driver.cpp).
// Used by tests/emu/driver.cpp; see tests/emu/harness.py.
#pragma once
#define GL_EMULATION 1

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// a static __shared__ array would be shared by the blocks that run at once: not emulated
#define __shared__ static_assert(false, "cuda_emu.h: use GL_DYNAMIC_SHARED, not static __shared__");

using std::max;
using std::min;

// CUDA's "ignore -ftz" FMA: an IEEE fused multiply-add, which std::fma is.
inline float __fmaf_ieee_rn(float a, float b, float c) { return std::fma(a, b, c); }

namespace emu {

constexpr int FAULT_EXIT = 67;
constexpr int SITE_BEGIN = -2, SITE_END = -1;   // the implicit barriers around each block

[[noreturn]] inline void fault(const char* fmt, ...)
{
    std::va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "EMU FAULT: ");
    std::vfprintf(stderr, fmt, ap);
    std::fprintf(stderr, "\n");
    va_end(ap);
    std::fflush(stderr);
    std::_Exit(FAULT_EXIT);
}

inline const char* site_name(int site, char* buf, size_t n)
{
    if (site == SITE_BEGIN)
        return "the start of the block";
    if (site == SITE_END)
        return "the end of the block (the thread returned)";
    std::snprintf(buf, n, "__syncthreads() at line %d", site);
    return buf;
}

// A reusable barrier for n threads that checks every thread arrives at the same call site.
class Barrier {
public:
    explicit Barrier(int n) : n_(n) {}
    void wait(int site, int who)
    {
        std::unique_lock<std::mutex> lock(mu_);
        const unsigned long gen = gen_;
        if (count_ == 0) {
            site_ = site;
            first_ = who;
        } else if (site != site_) {
            char a[64], b[64];
            fault("divergent barrier: thread %d reached %s while thread %d waits at %s", who,
                  site_name(site, a, sizeof a), first_, site_name(site_, b, sizeof b));
        }
        if (++count_ == n_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
            return;
        }
        if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return gen_ != gen; })) {
            char a[64];
            fault("barrier never completed: %d of %d threads at %s after 60 s (a hang on a GPU)",
                  count_, n_, site_name(site_, a, sizeof a));
        }
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    int n_, count_ = 0, site_ = 0, first_ = 0;
    unsigned long gen_ = 0;
};

struct Region {
    const char* lo;
    const char* hi;
    const char* name;
};

// One group of threads runs one block at a time.
struct Group {
    explicit Group(int nthreads) : barrier(nthreads)
    {
        const int nwarps = (nthreads + 31) / 32;
        for (int w = 0; w < nwarps; ++w)
            warp_barriers.emplace_back(new Barrier(std::min(32, nthreads - 32 * w)));
        warp_buffer.assign(32 * nwarps, 0.0);
    }
    Barrier barrier;
    std::vector<std::unique_ptr<Barrier>> warp_barriers;
    std::vector<double> warp_buffer;               // 32 slots per warp, one value each
    std::unique_ptr<unsigned char[]> smem;         // this block's dynamic shared memory
    size_t smem_bytes = 0;
    dim3 block;                                    // the block being run
};

inline dim3 grid_dim, block_dim;
inline std::vector<Region> globals;                // set by the driver before the launch
inline size_t dynamic_smem_bytes = 0;
thread_local Group* group = nullptr;
thread_local dim3 thread_idx, block_idx;
thread_local int linear_tid = 0;

inline void* dynamic_shared() { return group->smem.get(); }

inline void register_global(const void* p, size_t bytes, const char* name)
{
    globals.push_back({static_cast<const char*>(p), static_cast<const char*>(p) + bytes, name});
}

// A 16-byte access at p must be 16-byte aligned and inside one buffer.
inline void check16(const void* p, const char* what)
{
    const char* c = static_cast<const char*>(p);
    if (reinterpret_cast<std::uintptr_t>(c) % 16 != 0)
        fault("misaligned 16-byte %s at %p (address %% 16 = %d), block (%u,%u,%u) thread %d", what,
              p, (int)(reinterpret_cast<std::uintptr_t>(c) % 16), block_idx.x, block_idx.y,
              block_idx.z, linear_tid);
    const char* s = reinterpret_cast<const char*>(group->smem.get());
    if (c >= s && c + 16 <= s + group->smem_bytes)
        return;
    for (const Region& r : globals)
        if (c >= r.lo && c + 16 <= r.hi)
            return;
    for (const Region& r : globals)
        if (c + 16 > r.lo - 4096 && c < r.hi + 4096)
            fault("out-of-bounds 16-byte %s at byte %td of %s (%td bytes), block (%u,%u,%u) "
                  "thread %d", what, c - r.lo, r.name, r.hi - r.lo, block_idx.x, block_idx.y,
                  block_idx.z, linear_tid);
    if (c + 16 > s && c < s + group->smem_bytes + 4096)
        fault("out-of-bounds 16-byte %s at byte %td of shared memory (%zu bytes), block "
              "(%u,%u,%u) thread %d", what, c - s, group->smem_bytes, block_idx.x, block_idx.y,
              block_idx.z, linear_tid);
    fault("16-byte %s at %p is in no buffer, block (%u,%u,%u) thread %d", what, p, block_idx.x,
          block_idx.y, block_idx.z, linear_tid);
}

// cp.async state of one thread: copies issued since the last commit, and committed groups.
struct PendingCopy {
    void* dst;
    const void* src;
    bool pred;
};
thread_local std::vector<PendingCopy> open_copies;
thread_local std::deque<std::vector<PendingCopy>> committed_copies;

}  // namespace emu

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

#define __syncthreads() (::emu::group->barrier.wait(__LINE__, ::emu::linear_tid))

// ---- gl_common.cuh's memory helpers, checked -----------------------------------------------
template <typename T>
struct __align__(16) gl_vec16 {
    T v[16 / sizeof(T)];
};

template <typename T>
inline gl_vec16<T> gl_load16(const T* p)
{
    emu::check16(p, "vector load");
    gl_vec16<T> out;
    std::memcpy(&out, p, 16);
    return out;
}

template <typename T>
inline void gl_store16(T* p, const gl_vec16<T>& x)
{
    emu::check16(p, "vector store");
    std::memcpy(p, &x, 16);
}

template <typename T>
inline void gl_cp_async16(T* dst_shared, const T* src_global, bool pred)
{
    emu::check16(dst_shared, "cp.async destination");
    if (pred)
        emu::check16(src_global, "cp.async source");
    std::memset(dst_shared, 0xFF, 16);            // in flight: the destination is garbage
    emu::open_copies.push_back({dst_shared, src_global, pred});
}

inline void gl_cp_async_commit()
{
    emu::committed_copies.push_back(std::move(emu::open_copies));
    emu::open_copies.clear();
}

template <int N>
inline void gl_cp_async_wait()
{
    while ((int)emu::committed_copies.size() > N) {
        for (const emu::PendingCopy& c : emu::committed_copies.front()) {
            if (c.pred)
                std::memcpy(c.dst, c.src, 16);
            else
                std::memset(c.dst, 0, 16);
        }
        emu::committed_copies.pop_front();
    }
}

#define GL_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::emu::dynamic_shared())

inline unsigned gl_dynamic_smem_bytes() { return (unsigned)emu::group->smem_bytes; }

inline void gl_trap(const char* why) { emu::fault("__trap(): %s", why); }

// ---- warp shuffles -------------------------------------------------------------------------
namespace emu {
template <typename T, typename F>
T warp_exchange(T v, F source)
{
    const int warp = linear_tid / 32, lane = linear_tid % 32;
    const int nthreads = (int)(block_dim.x * block_dim.y * block_dim.z);
    const int width = std::min(32, nthreads - warp * 32);
    static_assert(sizeof(T) <= sizeof(double), "shuffle of a type wider than 8 bytes");
    double* slots = group->warp_buffer.data() + 32 * warp;
    std::memcpy(&slots[lane], &v, sizeof(T));
    group->warp_barriers[warp]->wait(__LINE__, linear_tid);
    const int src = source(lane);
    T out = v;
    if (src >= 0 && src < width)
        std::memcpy(&out, &slots[src], sizeof(T));
    group->warp_barriers[warp]->wait(__LINE__, linear_tid);   // slots are reused next time
    return out;
}
}  // namespace emu

template <typename T>
T __shfl_down_sync(unsigned, T v, int offset)
{
    return emu::warp_exchange(v, [&](int lane) { return lane + offset; });
}

template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask)
{
    return emu::warp_exchange(v, [&](int lane) { return lane ^ mask; });
}

namespace emu {

// Run body() as a grid of blocks of `block` threads with `smem_bytes` of dynamic shared memory:
// `concurrency` blocks at a time, blocks taken in an order shuffled by `seed` (0: x fastest).
inline void launch(dim3 grid, dim3 block, size_t smem_bytes, int concurrency, unsigned seed,
                   const std::function<void()>& body)
{
    const int nthreads = (int)(block.x * block.y * block.z);
    const int nblocks = (int)(grid.x * grid.y * grid.z);
    grid_dim = grid;
    block_dim = block;
    dynamic_smem_bytes = smem_bytes;
    std::vector<int> order(nblocks);
    std::iota(order.begin(), order.end(), 0);
    if (seed != 0) {
        std::mt19937 rng(seed);
        std::shuffle(order.begin(), order.end(), rng);
    }
    const int ngroups = std::max(1, std::min(concurrency, nblocks));
    std::vector<std::unique_ptr<Group>> groups;
    for (int g = 0; g < ngroups; ++g)
        groups.emplace_back(new Group(nthreads));
    std::vector<std::thread> threads;
    for (int g = 0; g < ngroups; ++g) {
        for (int t = 0; t < nthreads; ++t) {
            threads.emplace_back([&, g, t] {
                group = groups[g].get();
                linear_tid = t;
                thread_idx.x = t % block.x;
                thread_idx.y = (t / block.x) % block.y;
                thread_idx.z = t / (block.x * block.y);
                for (int n = g; n < nblocks; n += ngroups) {
                    if (t == 0) {              // a fresh, garbage-filled shared memory
                        const int b = order[n];
                        group->block.x = b % grid.x;
                        group->block.y = (b / grid.x) % grid.y;
                        group->block.z = b / (grid.x * grid.y);
                        group->smem.reset(new unsigned char[std::max<size_t>(smem_bytes, 1)]);
                        group->smem_bytes = smem_bytes;
                        std::memset(group->smem.get(), (n / ngroups) % 2 ? 0x7F : 0xFF,
                                    smem_bytes);
                    }
                    group->barrier.wait(SITE_BEGIN, t);
                    block_idx = group->block;
                    body();
                    size_t left = open_copies.size();
                    for (const auto& c : committed_copies)
                        left += c.size();
                    if (left)
                        fault("%zu cp.async copies of thread %d, block (%u,%u,%u), were never "
                              "waited for", left, t, block_idx.x, block_idx.y, block_idx.z);
                    open_copies.clear();
                    committed_copies.clear();
                    group->barrier.wait(SITE_END, t);
                }
            });
        }
    }
    for (auto& th : threads)
        th.join();
}

}  // namespace emu
