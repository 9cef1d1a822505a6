// gl_common.cuh: helpers shared by the gpulinear kernels.
// The loader (gpulinear/cuda/_loader.py) inlines this file into each .cu source string, once,
// so NVRTC never searches include paths and CuPy's disk cache keys on the full source.
#pragma once

// Overloads so that one template body serves float and double without implicit promotion.
__device__ __forceinline__ float gl_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double gl_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float gl_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double gl_abs(double x) { return fabs(x); }
__device__ __forceinline__ float gl_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double gl_pow(double x, double y) { return pow(x, y); }

// Sum of v over the thread block; the result is valid in thread 0 only.
// Needs blockDim.x a multiple of 32 (full-warp shuffles) and <= 1024; `scratch` holds 32
// values in shared memory.  Every thread of the block must call it (it synchronizes twice,
// so `scratch` may be reused right after it returns).
template <typename T>
__device__ __forceinline__ T gl_block_sum(T v, T* scratch)
{
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    v = ((int)threadIdx.x < nwarps) ? scratch[threadIdx.x] : T(0);
    if (warp == 0) {
        for (int offset = 16; offset > 0; offset >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    __syncthreads();
    return v;
}

// Grid-stride loop over [0, n) for the elementwise kernels.
#define GL_GRID_STRIDE(i, n)                                                            \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);       \
         i += (long long)blockDim.x * gridDim.x)

// Offset of element i of a (B, rows, cols) array with strides (sc, sr, 1), where i counts the
// elements of a contiguous (B, rows, cols) array (per = rows * cols).  The engine's gradient G
// is a (C, k, d) view of a (C, k, d + k) buffer, so it is strided; parameters are contiguous.
__device__ __forceinline__ long long gl_strided(long long i, long long per, long long cols,
                                                long long sc, long long sr)
{
    const long long c = i / per;
    const long long rem = i - c * per;
    const long long r = rem / cols;
    return c * sc + r * sr + (rem - r * cols);
}
