// lp loss pass: residuals, l'(R) = |R|^(p-2) R and the per-config loss, in one read of Z.
// NumPy twin: gpulinear.cuda.twins.lp_value_grad (and gpulinear.losses.Lp.value_and_grad).
#include "gl_common.cuh"

// One block per config b (gridDim.x = B); its threads stride over the k*m entries.
//   Z      (B, k, m)  predictions, overwritten with R = Z - Y (has_y = 0: Z already is R, as
//                     when train() folds -Y into its forward GEMM; Yt is then not read)
//   Yt     (k, m)     targets
//   out    (B, k, m)  l'(R) = |R|^(p-2) R  (the gradient of the SUM over examples)
//   values (B,)       sum |R|^p / (p m), exactly Lp.value_and_grad's value
// mode 2 and 4 are the p = 2 and p = 4 fast paths (no pow); mode 0 is any real p >= 2.
// blockDim.x must be a multiple of 32.
template <typename T>
__global__ void gl_lp_value_grad(T* Z, const T* __restrict__ Yt, T* __restrict__ out,
                                 T* __restrict__ values, int km, int m, T p, int mode, int has_y)
{
    __shared__ T scratch[32];
    const long long base = (long long)blockIdx.x * km;
    T* z = Z + base;
    T* o = out + base;
    T acc = T(0);
    for (int j = threadIdx.x; j < km; j += blockDim.x) {
        T r = z[j];
        if (has_y) {
            r -= Yt[j];
            z[j] = r;
        }
        if (mode == 2) {
            o[j] = r;
            acc += r * r;
        } else if (mode == 4) {
            const T r2 = r * r;
            o[j] = r2 * r;
            acc += r2 * r2;
        } else {
            const T a = gl_abs(r);
            const T t = gl_pow(a, p - T(2));     // 0^x = 0 for x > 0 (p = 2 is mode 2)
            o[j] = t * r;
            acc += t * (a * a);
        }
    }
    acc = gl_block_sum(acc, scratch);
    if (threadIdx.x == 0)
        values[blockIdx.x] = acc / (p * T(m));
}

template __global__ void gl_lp_value_grad<float>(float*, const float*, float*, float*, int, int,
                                                 float, int, int);
template __global__ void gl_lp_value_grad<double>(double*, const double*, double*, double*, int,
                                                  int, double, int, int);
