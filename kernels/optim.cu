// Optimizer updates, in place, for one layer (B, a, b) of every config; torch.optim formulas with
// coupled weight decay g <- g + wd p.  Element i of the contiguous params p belongs to config
// c = i / per (per = a * b); hyperparameters are (B,) arrays indexed by c; `count` (B,) is the
// number of steps taken (this update is step t = count + 1; gl_count_step increments it after
// every layer of the step is updated).  A frozen config (alive[c] == false) keeps its params AND
// its state.  The gradient g may be strided (the engine's G is a view): gcols, gsc, gsr are its
// columns, config stride and row stride in elements (gl_strided).
// NumPy twins: the update functions of gpulinear/optim.py (see gpulinear.cuda.twins).
#include "gl_common.cuh"

// The parameters every update kernel starts with.
#define GL_OPT_ARGS(T)                                                                         \
    long long n, long long per, T* p, const T* __restrict__ g, long long gcols, long long gsc, \
        long long gsr
#define GL_OPT_TYPES(T) long long, long long, T*, const T*, long long, long long, long long

// Config index, the frozen check, and the decayed gradient g + wd p.
#define GL_PRELUDE                                                                             \
    const long long c = i / per;                                                               \
    if (!alive[c])                                                                             \
        continue;                                                                              \
    const T gi = g[gl_strided(i, per, gcols, gsc, gsr)] + wd[c] * p[i];

// p <- p - lr (g + wd p)
template <typename T>
__global__ void gl_opt_gd(GL_OPT_ARGS(T), const T* __restrict__ lr, const T* __restrict__ wd,
                          const bool* __restrict__ alive)
{
    GL_GRID_STRIDE(i, n) {
        GL_PRELUDE
        p[i] = p[i] - lr[c] * gi;
    }
}

// buf <- mu buf + g;  p <- p - lr buf  (nesterov: p <- p - lr (g + mu buf))
template <typename T>
__global__ void gl_opt_momentum(GL_OPT_ARGS(T), T* __restrict__ buf, const T* __restrict__ lr,
                                const T* __restrict__ wd, const T* __restrict__ mu, int nesterov,
                                const bool* __restrict__ alive)
{
    GL_GRID_STRIDE(i, n) {
        GL_PRELUDE
        const T b = mu[c] * buf[i] + gi;
        buf[i] = b;
        p[i] = p[i] - lr[c] * (nesterov ? gi + mu[c] * b : b);
    }
}

// sum <- sum + g^2;  p <- p - lr / (1 + (t-1) lr_decay) * g / (sqrt(sum) + eps)
template <typename T>
__global__ void gl_opt_adagrad(GL_OPT_ARGS(T), T* __restrict__ sum, const T* __restrict__ lr,
                               const T* __restrict__ wd, const T* __restrict__ lr_decay,
                               const T* __restrict__ eps, const long long* __restrict__ count,
                               const bool* __restrict__ alive)
{
    GL_GRID_STRIDE(i, n) {
        GL_PRELUDE
        const T t = T(count[c] + 1);
        const T clr = lr[c] / (T(1) + (t - T(1)) * lr_decay[c]);
        const T s = sum[i] + gi * gi;
        sum[i] = s;
        p[i] = p[i] - clr * gi / (gl_sqrt(s) + eps[c]);
    }
}

// sq <- rho sq + (1-rho) g^2;  delta = sqrt(acc + eps) / sqrt(sq + eps) g;
// acc <- rho acc + (1-rho) delta^2;  p <- p - lr delta
template <typename T>
__global__ void gl_opt_adadelta(GL_OPT_ARGS(T), T* __restrict__ sq, T* __restrict__ acc,
                                const T* __restrict__ lr, const T* __restrict__ wd,
                                const T* __restrict__ rho, const T* __restrict__ eps,
                                const bool* __restrict__ alive)
{
    GL_GRID_STRIDE(i, n) {
        GL_PRELUDE
        const T r = rho[c];
        const T s = r * sq[i] + (T(1) - r) * (gi * gi);
        const T a = acc[i];
        const T delta = gl_sqrt(a + eps[c]) / gl_sqrt(s + eps[c]) * gi;
        sq[i] = s;
        acc[i] = r * a + (T(1) - r) * (delta * delta);
        p[i] = p[i] - lr[c] * delta;
    }
}

// m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
// p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
template <typename T>
__global__ void gl_opt_adam(GL_OPT_ARGS(T), T* __restrict__ m1, T* __restrict__ v2,
                            const T* __restrict__ lr, const T* __restrict__ wd,
                            const T* __restrict__ beta1, const T* __restrict__ beta2,
                            const T* __restrict__ eps, const long long* __restrict__ count,
                            const bool* __restrict__ alive)
{
    GL_GRID_STRIDE(i, n) {
        GL_PRELUDE
        const T t = T(count[c] + 1);
        const T b1 = beta1[c], b2 = beta2[c];
        const T m = b1 * m1[i] + (T(1) - b1) * gi;
        const T v = b2 * v2[i] + (T(1) - b2) * (gi * gi);
        m1[i] = m;
        v2[i] = v;
        const T step_size = lr[c] / (T(1) - gl_pow(b1, t));
        const T denom = gl_sqrt(v) / gl_sqrt(T(1) - gl_pow(b2, t)) + eps[c];
        p[i] = p[i] - step_size * m / denom;
    }
}

// sq <- alpha sq + (1-alpha) g^2;  ga <- alpha ga + (1-alpha) g;
// avg = sqrt(centered ? sq - ga^2 : sq) + eps;
// momentum > 0: buf <- mu buf + g / avg, p <- p - lr buf;  else p <- p - lr g / avg
template <typename T>
__global__ void gl_opt_rmsprop(GL_OPT_ARGS(T), T* __restrict__ sq, T* __restrict__ ga,
                               T* __restrict__ buf, const T* __restrict__ lr,
                               const T* __restrict__ wd, const T* __restrict__ alpha,
                               const T* __restrict__ eps, const T* __restrict__ mu,
                               const T* __restrict__ centered, const bool* __restrict__ alive)
{
    GL_GRID_STRIDE(i, n) {
        GL_PRELUDE
        const T al = alpha[c];
        const T s = al * sq[i] + (T(1) - al) * (gi * gi);
        const T a = al * ga[i] + (T(1) - al) * gi;
        sq[i] = s;
        ga[i] = a;
        const T avg = gl_sqrt(centered[c] != T(0) ? s - a * a : s) + eps[c];
        if (mu[c] > T(0)) {
            const T b = mu[c] * buf[i] + gi / avg;
            buf[i] = b;
            p[i] = p[i] - lr[c] * b;
        } else {
            p[i] = p[i] - lr[c] * (gi / avg);
        }
    }
}

// count[c] += 1 for the live configs (after every layer of the step is updated).
__global__ void gl_count_step(int B, long long* __restrict__ count,
                              const bool* __restrict__ alive)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < B && alive[c])
        count[c] += 1;
}

#define GL_INSTANTIATE(T)                                                                      \
    template __global__ void gl_opt_gd<T>(GL_OPT_TYPES(T), const T*, const T*, const bool*);   \
    template __global__ void gl_opt_momentum<T>(GL_OPT_TYPES(T), T*, const T*, const T*,       \
                                                const T*, int, const bool*);                   \
    template __global__ void gl_opt_adagrad<T>(GL_OPT_TYPES(T), T*, const T*, const T*,        \
                                               const T*, const T*, const long long*,           \
                                               const bool*);                                   \
    template __global__ void gl_opt_adadelta<T>(GL_OPT_TYPES(T), T*, T*, const T*, const T*,   \
                                                const T*, const T*, const bool*);              \
    template __global__ void gl_opt_adam<T>(GL_OPT_TYPES(T), T*, T*, const T*, const T*,       \
                                            const T*, const T*, const T*, const long long*,    \
                                            const bool*);                                      \
    template __global__ void gl_opt_rmsprop<T>(GL_OPT_TYPES(T), T*, T*, T*, const T*,          \
                                               const T*, const T*, const T*, const T*,         \
                                               const T*, const bool*);

GL_INSTANTIATE(float)
GL_INSTANTIATE(double)
