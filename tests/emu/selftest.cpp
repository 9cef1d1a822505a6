// Self-test of cuda_emu.h: each scenario is a tiny kernel that breaks one rule the way a kernel
// edit could; tests/test_emu.py::test_emulator_catches runs `selftest SCENARIO` and checks the
// exit code and message.  Prints "OK <detail>" and exits 0 when the scenario finished normally.
#include "cuda_emu.h"

#include <atomic>
#include <string>

static std::atomic<int> running{0}, most{0};
static float g_in[64] __attribute__((aligned(16)));
static float g_out[64] __attribute__((aligned(16)));

// shared memory a block never wrote reads as garbage (NaN bytes or 0x7F7F7F7F), never 0
__global__ void read_unwritten()
{
    GL_DYNAMIC_SHARED(float, s);
    if (threadIdx.x == 0)
        g_out[blockIdx.x] = s[5];
}

// one thread skips a barrier that the others wait at
__global__ void skip_barrier()
{
    if (threadIdx.x != 3)
        __syncthreads();
    __syncthreads();
}

__global__ void misaligned_load()
{
    GL_DYNAMIC_SHARED(float, s);
    gl_vec16<float> v = gl_load16(s + 1);
    g_out[threadIdx.x] = v.v[0];
}

__global__ void load_past_global()
{
    gl_vec16<float> v = gl_load16(g_in + 64);     // the 16 bytes after g_in
    g_out[threadIdx.x] = v.v[0];
}

// a cp.async destination read before the wait: garbage, not the data
__global__ void read_before_wait()
{
    GL_DYNAMIC_SHARED(float, s);
    gl_cp_async16(s + 4 * threadIdx.x, g_in + 4 * threadIdx.x, true);
    gl_cp_async_commit();
    g_out[threadIdx.x] = s[4 * threadIdx.x];     // no wait, no barrier
    gl_cp_async_wait<0>();
}

__global__ void never_waited()
{
    GL_DYNAMIC_SHARED(float, s);
    gl_cp_async16(s + 4 * threadIdx.x, g_in + 4 * threadIdx.x, true);
    gl_cp_async_commit();
}

// how many blocks are inside the kernel at the same time
__global__ void concurrency()
{
    if (threadIdx.x == 0) {
        const int now = ++running;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        --running;
    }
    __syncthreads();
}

int main(int argc, char** argv)
{
    const std::string what = argc > 1 ? argv[1] : "";
    for (int i = 0; i < 64; ++i)
        g_in[i] = float(i + 1);
    emu::register_global(g_in, sizeof g_in, "g_in");
    emu::register_global(g_out, sizeof g_out, "g_out");
    dim3 grid, block;
    block.x = 8;
    grid.x = 4;
    auto run = [&](void (*k)()) { emu::launch(grid, block, 256, 2, 1, [&] { k(); }); };
    if (what == "read_unwritten") {
        run(read_unwritten);
        for (int b = 0; b < 4; ++b)
            if (g_out[b] == 0.0f) {
                std::printf("ZERO in block %d\n", b);
                return 1;
            }
        std::printf("OK garbage %g %g\n", g_out[0], g_out[1]);
    } else if (what == "skip_barrier") {
        run(skip_barrier);
    } else if (what == "misaligned_load") {
        run(misaligned_load);
    } else if (what == "load_past_global") {
        run(load_past_global);
    } else if (what == "read_before_wait") {
        run(read_before_wait);
        for (int t = 0; t < 8; ++t)
            if (g_out[t] == g_in[4 * t]) {
                std::printf("DATA before the wait in thread %d\n", t);
                return 1;
            }
        std::printf("OK garbage before the wait\n");
    } else if (what == "never_waited") {
        run(never_waited);
    } else if (what == "concurrency") {
        run(concurrency);
        std::printf("OK %d blocks at once\n", most.load());
    } else {
        std::fprintf(stderr, "unknown scenario %s\n", what.c_str());
        return 2;
    }
    return 0;
}
