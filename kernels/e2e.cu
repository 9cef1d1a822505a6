// Eq 12 of the paper (k = 1), fused: one block per config does both reductions and the update.
// NumPy twin: gpulinear.cuda.twins.e2e_k1 (= gpulinear.e2e.end_to_end_update plus the mask).
#include "gl_common.cuh"

//   W     (B, 1, d) end-to-end vectors; Wout (B, 1, d) receives the update (Wout may be W)
//   G     (B, 1, d) dL/dW_e, config b at G + b * gsc (a view: the engine's G is strided)
//   lr, wd (B,)     per-config learning rate and weight decay
//   alive (B,)      frozen configs are untouched (copied when Wout != W)
// W <- (1 - lr wd N) W - lr ||W||^(2-2/N) (G + (N-1) <G, W/||W||> W/||W||);
// the step is 0 at W = 0 for N >= 2 and plain G for N = 1.  blockDim.x a multiple of 32.
template <typename T>
__global__ void gl_e2e_k1(const T* W, const T* __restrict__ G, T* Wout,
                          const T* __restrict__ lr, const T* __restrict__ wd,
                          const bool* __restrict__ alive, int d, int N, long long gsc)
{
    __shared__ T scratch[32];
    __shared__ T coef[2];
    const long long base = (long long)blockIdx.x * d;
    const T* w = W + base;
    const T* g = G + (long long)blockIdx.x * gsc;
    T* wo = Wout + base;
    if (!alive[blockIdx.x]) {            // uniform over the block: nobody reaches a barrier
        if (wo != w)
            for (int j = threadIdx.x; j < d; j += blockDim.x)
                wo[j] = w[j];
        return;
    }
    T sq = T(0), gw = T(0);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        sq += w[j] * w[j];
        gw += g[j] * w[j];
    }
    sq = gl_block_sum(sq, scratch);
    gw = gl_block_sum(gw, scratch);
    if (threadIdx.x == 0) {
        T a = T(1), c = T(0);            // step_j = a g_j + c w_j
        if (N > 1) {
            if (sq > T(0)) {
                const T norm = gl_sqrt(sq);
                a = gl_pow(norm, T(2) - T(2) / T(N));
                c = a * T(N - 1) * (gw / norm) / norm;   // <G, W/|W|> W/|W| = (gw/|W|^2) W
            } else {
                a = T(0);
            }
        }
        coef[0] = a;
        coef[1] = c;
    }
    __syncthreads();
    const T a = coef[0], c = coef[1];
    const T rate = lr[blockIdx.x];
    const T decay = T(1) - rate * wd[blockIdx.x] * T(N);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const T wj = w[j];
        wo[j] = decay * wj - rate * (a * g[j] + c * wj);
    }
}

template __global__ void gl_e2e_k1<float>(const float*, const float*, float*, const float*,
                                          const float*, const bool*, int, int, long long);
template __global__ void gl_e2e_k1<double>(const double*, const double*, double*, const double*,
                                           const double*, const bool*, int, int, long long);
