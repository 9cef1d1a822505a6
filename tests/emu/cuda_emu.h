// cuda_emu.h: compile a CUDA C++ kernel file with g++ and run it on the CPU with real block
// semantics, so ThreadSanitizer sees the kernel's shared-memory traffic.
//
// - one OS thread per CUDA thread of a block; blocks run one after another on the same threads
//   (a barrier between blocks orders them, as the end of a block does on a GPU for its shared
//   memory);
// - threadIdx / blockIdx are thread-local, blockDim / gridDim are set before the threads start;
// - __syncthreads() is a real barrier (mutex + condition variable, which TSan understands);
// - __shared__ is `static`: one instance per kernel instantiation, shared by the threads of the
//   running block (blocks never overlap).  Unlike a GPU it starts zeroed, so a read of a shared
//   element never written is not caught;
// - __shfl_down_sync / __shfl_xor_sync go through a per-warp exchange buffer between two warp
//   barriers (all 32 lanes, or the block's tail warp, must call them, as on a GPU).
// Used by tests/emu/driver.cpp; see tests/emu/harness.py.
#pragma once

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
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
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

using std::min;
using std::max;

namespace emu {

// A reusable barrier for n threads (generation counting).
class Barrier {
public:
    explicit Barrier(int n) : n_(n) {}
    void wait()
    {
        std::unique_lock<std::mutex> lock(mu_);
        const unsigned long gen = gen_;
        if (++count_ == n_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return gen_ != gen; });
        }
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    int n_, count_ = 0;
    unsigned long gen_ = 0;
};

inline dim3 grid_dim, block_dim;
inline Barrier* block_barrier = nullptr;
inline std::vector<std::unique_ptr<Barrier>> warp_barriers;
inline std::vector<double> warp_buffer;        // 32 slots per warp, one value each
thread_local dim3 thread_idx, block_idx;
thread_local int linear_tid = 0;

}  // namespace emu

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

inline void __syncthreads() { emu::block_barrier->wait(); }

namespace emu {
template <typename T, typename F>
T warp_exchange(T v, F source)
{
    const int warp = linear_tid / 32, lane = linear_tid % 32;
    const int nthreads = (int)(block_dim.x * block_dim.y * block_dim.z);
    const int width = std::min(32, nthreads - warp * 32);
    static_assert(sizeof(T) <= sizeof(double), "shuffle of a type wider than 8 bytes");
    double* slots = warp_buffer.data() + 32 * warp;
    std::memcpy(&slots[lane], &v, sizeof(T));
    warp_barriers[warp]->wait();
    const int src = source(lane);
    T out = v;
    if (src >= 0 && src < width)
        std::memcpy(&out, &slots[src], sizeof(T));
    warp_barriers[warp]->wait();               // slots are reused by the next shuffle
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

// Run body() as a grid of blocks: blockDim threads, blocks one after another (x fastest).
inline void launch(dim3 grid, dim3 block, const std::function<void()>& body)
{
    const int nthreads = (int)(block.x * block.y * block.z);
    grid_dim = grid;
    block_dim = block;
    Barrier barrier(nthreads);
    block_barrier = &barrier;
    const int nwarps = (nthreads + 31) / 32;
    warp_barriers.clear();
    for (int w = 0; w < nwarps; ++w)
        warp_barriers.emplace_back(new Barrier(std::min(32, nthreads - 32 * w)));
    warp_buffer.assign(32 * nwarps, 0.0);
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) {
        threads.emplace_back([&, t] {
            linear_tid = t;
            thread_idx.x = t % block.x;
            thread_idx.y = (t / block.x) % block.y;
            thread_idx.z = t / (block.x * block.y);
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        block_idx.x = bx;
                        block_idx.y = by;
                        block_idx.z = bz;
                        body();
                        barrier.wait();        // the block ends before the next one starts
                    }
        });
    }
    for (auto& th : threads)
        th.join();
    block_barrier = nullptr;
}

}  // namespace emu
