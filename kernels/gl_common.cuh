// gl_common.cuh: helpers shared by the gpulinear kernels.
// The loader (gpulinear/cuda/_loader.py) inlines this file into each .cu source string, once,
// so NVRTC never searches include paths and CuPy's disk cache keys on the full source.
//
// The CPU emulation (tests/emu/cuda_emu.h) defines GL_EMULATION and its own checked versions of
// the memory helpers below (16-byte vectors, cp.async, dynamic shared memory); everything else
// here is compiled as is by g++.
#pragma once

// ---- One floating-point contract, whatever the compile flags ------------------------------
// CuPy appends -ftz=true to every RawModule's options AFTER the caller's (cupy/cuda/compiler.py,
// _compile_with_cache_cuda) and NVRTC takes the last -ftz it sees (checked with NVRTC 13.5:
// "-ftz=false -ftz=true" emits fma.rn.ftz.f32), so passing -ftz=false from gpulinear changes
// nothing.  Under -ftz=true every float32 add/mul/fma, fabsf, float compare and float<->double
// cvt flushes denormals (|x| < 1.2e-38) to zero; the twin (NumPy) and the emulation (g++) do not.
// So the kernels' float arithmetic goes through these helpers, which no compile flag changes:
//   gl_fma  : __fmaf_ieee_rn (fma.rn.f32, "ignores -ftz=true"), fma for double (FTZ never
//             applies to double); a*b, a+b and a-b are written as one fma, so every rounding
//             step is explicit, identical on the GPU and in the emulation (std::fma).
//   gl_widen / gl_narrow : float <-> double through inline PTX cvt without .ftz (the compiler's
//             own conversion becomes cvt.ftz.* under -ftz=true).
// tests/test_fp_contract.py compiles the kernels with CuPy's exact option list and fails on any
// .ftz instruction in the float32 kernels.
__device__ __forceinline__ float gl_fma(float a, float b, float c) { return __fmaf_ieee_rn(a, b, c); }
__device__ __forceinline__ double gl_fma(double a, double b, double c) { return fma(a, b, c); }
template <typename T> __device__ __forceinline__ T gl_mul(T a, T b) { return gl_fma(a, b, T(-0.0)); }
template <typename T> __device__ __forceinline__ T gl_add(T a, T b) { return gl_fma(a, T(1), b); }
template <typename T> __device__ __forceinline__ T gl_sub(T a, T b) { return gl_fma(b, T(-1), a); }

__device__ __forceinline__ double gl_widen(double x) { return x; }
template <typename T> __device__ __forceinline__ T gl_narrow(double x);
template <> __device__ __forceinline__ double gl_narrow<double>(double x) { return x; }
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ double gl_widen(float x)
{
    double out;
    asm("cvt.f64.f32 %0, %1;" : "=d"(out) : "f"(x));
    return out;
}
template <> __device__ __forceinline__ float gl_narrow<float>(double x)
{
    float out;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(out) : "d"(x));
    return out;
}
#else
__device__ __forceinline__ double gl_widen(float x) { return (double)x; }
template <> __device__ __forceinline__ float gl_narrow<float>(double x) { return (float)x; }
#endif

#ifndef GL_EMULATION
// ---- 16-byte memory traffic ---------------------------------------------------------------
// 16 bytes of T: one LDS.128 / LDG.128 / STS.128 when the address is 16-byte aligned (the
// emulation asserts that it is, and that the 16 bytes lie inside a buffer).
template <typename T>
struct __align__(16) gl_vec16 {
    T v[16 / sizeof(T)];
};

template <typename T>
__device__ __forceinline__ gl_vec16<T> gl_load16(const T* p)
{
    return *reinterpret_cast<const gl_vec16<T>*>(p);
}

template <typename T>
__device__ __forceinline__ void gl_store16(T* p, const gl_vec16<T>& x)
{
    *reinterpret_cast<gl_vec16<T>*>(p) = x;
}

// cp.async (sm_80+): 16 bytes global -> shared without passing through registers; `pred` false
// zero-fills the 16 bytes (src-size 0, nothing read; `src` must still be a valid address).  The
// copy lands at some point before the thread's matching gl_cp_async_wait returns; other threads
// see it after a barrier that follows that wait.  Older GPUs: a synchronous copy.
template <typename T>
__device__ __forceinline__ void gl_cp_async16(T* dst_shared, const T* src_global, bool pred)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned dst = (unsigned)__cvta_generic_to_shared(dst_shared);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src_global),
                 "r"(pred ? 16 : 0)
                 : "memory");
#else
    gl_vec16<T> v = {};
    if (pred)
        v = gl_load16(src_global);
    gl_store16(dst_shared, v);
#endif
}

// Close the group of cp.async copies issued since the last commit (an empty group is fine).
__device__ __forceinline__ void gl_cp_async_commit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void gl_cp_async_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// The block's dynamic shared memory (the launch's shared_mem bytes), 16-byte aligned.
#define GL_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]

// Bytes of dynamic shared memory this launch has (PTX %dynamic_smem_size).
__device__ __forceinline__ unsigned gl_dynamic_smem_bytes()
{
#if defined(__CUDA_ARCH__)
    unsigned n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
#else
    return 0;
#endif
}

// Stop the kernel with an error the host sees at its next synchronisation.
__device__ __forceinline__ void gl_trap(const char*)
{
#if defined(__CUDA_ARCH__)
    __trap();
#endif
}
#endif  // GL_EMULATION

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
