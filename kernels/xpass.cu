// X-pass: both passes over X of one lp step, fused, for R = C*k independent rows w_i (d,).
// NumPy twin: gpulinear.cuda.xpass.xpass_twin; launcher and split planner: gpulinear.cuda.xpass.
//
// For row i (config i // k, output o = i % k) and example j:
//   r_ij = <w_i, x_j> - Yt[o, j]
//   Lpart[s, i]    = sum_{j in split s} |r_ij|^p                  (not divided by p or m)
//   Gpart[s, i, :] = sum_{j in split s} |r_ij|^(p-2) r_ij x_j     (not divided by m)
// Z = W X^T and D = l'(Z) never reach global memory: a block owns TR rows and one example split,
// streams the split's X tiles (MT examples) through shared memory, computes its Z tile in
// registers, applies the loss epilogue in registers, keeps D (MT x TR) in shared memory and
// accumulates G += D^T X_tile in registers across all the split's tiles.  One block writes each
// output element exactly once (no atomics), so results are bitwise deterministic.
//
// Grid (ceil(R / TR), S, ceil(d / DC)): blockIdx.z picks a window of DC columns of G.  Z needs all
// of d, so a block computes Z over every window (its own last, so the X tile of its own window
// is still in shared memory for the G pass) and accumulates G for its own window only; only
// window 0 writes Lpart.  With d <= DC (Ethanol: d = 128) there is one window: every X tile is
// read once and the block's W rows are loaded once.
//
// Inputs are zero-padded: W (R, ldw) and X (m, ldx) hold zeros in columns d.., and ldw, ldx are
// multiples of 16 bytes with 16-byte aligned bases, so every global and shared access moves 16
// bytes (float4 / double2) and the padding adds zeros to the dot products.
#include "gl_common.cuh"

// 16 bytes of T: one LDS.128 / LDG.128 when the address is 16-byte aligned.
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

// 128 threads as TY x TX = 8 x 16: a warp is two values of ty and all 16 of tx, so W and D reads
// (indexed by ty) are two-address broadcasts and X reads (indexed by tx) hit 16 distinct rows.
constexpr int GL_XPASS_THREADS = 128;
constexpr int GL_XPASS_TY = 8;
constexpr int GL_XPASS_TX = 16;

// Tiles, estimated, not measured (no GPU was available; chosen by counting shared-memory
// wavefronts per FMA for sm_90 and keeping static shared memory under 48 KB):
//   float : TR = 32 rows, MT = 32 examples, DC = 128 columns.  Z micro-tile 4 rows x 2 examples,
//           G micro-tile 4 rows x 8 columns: per 4 k of Z, 6 LDS.128 (~8 wavefronts) for 32 FFMA;
//           per example of G, 3 LDS.128 (~5 wavefronts) for 32 FFMA (8 cycles of an SM's FFMA
//           issue): FMA-bound on paper.  DC = 128 = Ethanol's d, so Z is never recomputed there.
//           ~80 registers, 40.4 KB shared: ~5 blocks (20 warps) per SM.
//   double: TR = 16, MT = 16, DC = 128 (the float tile would need 80 KB of shared memory);
//           Z micro-tile 2 x 1, G micro-tile 2 x 8.  FP64 issues at half the FP32 rate, so the
//           smaller Z micro-tile costs less; the Z pass is shared-memory-bound (~50 % of DFMA).
template <typename T> struct gl_xpass_tiles;
template <> struct gl_xpass_tiles<float> {
    static constexpr int TR = 32, MT = 32, DC = 128;
};
template <> struct gl_xpass_tiles<double> {
    static constexpr int TR = 16, MT = 16, DC = 128;
};

// l_p epilogue of one residual: D = |r|^(p-2) r returned, |r|^p added to `loss`.
// p == 2 and p == 4 skip pow (the common losses); pow(0, p - 2) = 0 for p > 2.
template <typename T>
__device__ __forceinline__ T gl_lp_epilogue(T r, T p, T& loss)
{
    if (p == T(2)) {
        loss += r * r;
        return r;
    }
    if (p == T(4)) {
        const T r2 = r * r;
        loss += r2 * r2;
        return r2 * r;
    }
    const T a = gl_abs(r);
    const T t = gl_pow(a, p - T(2));
    loss += t * (a * a);
    return t * r;
}

template <typename T>
__global__ void gl_xpass(
    const T* __restrict__ W, int ldw,      // (R, ldw) rows w_i, columns d..ldw-1 zero
    const T* __restrict__ X, int ldx,      // (m, ldx) examples, columns d..ldx-1 zero
    const T* __restrict__ Yt,              // (k, m) targets, row o of Yt for rows i with i % k == o
    const T* __restrict__ prow,            // (R,) p of row i (fast paths p == 2 and p == 4)
    T* __restrict__ Gpart, int ldg,        // (S, R, ldg) out; columns d..ldg-1 untouched
    T* __restrict__ Lpart,                 // (S, R) out
    int R, int m, int d, int k, int m_per_split,
    long long* clock)                      // step counter on the device (may be null)
{
    constexpr int TR = gl_xpass_tiles<T>::TR;
    constexpr int MT = gl_xpass_tiles<T>::MT;
    constexpr int DC = gl_xpass_tiles<T>::DC;
    constexpr int TY = GL_XPASS_TY, TX = GL_XPASS_TX, NT = GL_XPASS_THREADS;
    constexpr int V = 16 / sizeof(T);      // T per 16-byte vector
    constexpr int DCP = DC + V;            // shared row pitch: 16-byte aligned, and an odd number
                                           // of 16-byte groups, so 16 rows read at one column
                                           // fall in distinct bank groups
    constexpr int TRP = TR + V;
    constexpr int ZR = TR / TY;            // Z micro-tile: rows ty + TY*a, examples tx + TX*b
    constexpr int ZE = MT / TX;
    constexpr int GR = TR / TY;            // G micro-tile: rows ty*GR + a, columns (tx + TX*g)*V + e
    constexpr int GG = DC / (TX * V);
    static_assert(TY * TX == NT, "thread layout");
    static_assert(TR % TY == 0 && MT % TX == 0 && DC % (TX * V) == 0, "tiles vs threads");
    static_assert(GR == V, "a thread's G rows are one 16-byte vector of D");
    static_assert((MT * DC / V) % NT == 0 && (TR * DC / V) % NT == 0, "tile loads");
    static_assert((DCP / V) % 2 == 1, "bank-conflict-free pitch");

    // Each array on its own line (the Numba simulator aliases same-line shared arrays; CUDA
    // does not, but the habit keeps the twins readable side by side).
    __shared__ __align__(16) T Xs[MT * DCP];   // X tile (MT examples x DC columns of one window)
    __shared__ __align__(16) T Ws[TR * DCP];   // W rows of the block, same window
    __shared__ __align__(16) T Ds[MT * TRP];   // D = l'(R) of the tile, example-major
    __shared__ T Ls[TR * TX];                  // per-thread partial losses, reduced at the end

    const int tid = threadIdx.x;
    const int ty = tid / TX, tx = tid % TX;
    const int row0 = blockIdx.x * TR;
    const int s = blockIdx.y;
    const int chunk = blockIdx.z;
    const int nwin = gridDim.z;
    const int jbeg = s * m_per_split;
    const int jend = min(m, jbeg + m_per_split);

    if (clock != nullptr && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && tid == 0)
        clock[0] += 1;

    T pr[ZR];                              // p of the Z rows, read once
    int orow[ZR];                          // their output index o = i % k (row of Yt)
#pragma unroll
    for (int a = 0; a < ZR; ++a) {
        const int i = row0 + ty + TY * a;
        pr[a] = i < R ? prow[i] : T(2);
        orow[a] = i < R ? i % k : 0;
    }

    T gacc[GR][GG * V];
#pragma unroll
    for (int a = 0; a < GR; ++a)
#pragma unroll
        for (int c = 0; c < GG * V; ++c)
            gacc[a][c] = T(0);
    T lacc[ZR];
#pragma unroll
    for (int a = 0; a < ZR; ++a)
        lacc[a] = T(0);

    bool first = true;
    for (int j0 = jbeg; j0 < jend; j0 += MT) {
        T z[ZR][ZE];
#pragma unroll
        for (int a = 0; a < ZR; ++a)
#pragma unroll
            for (int b = 0; b < ZE; ++b)
                z[a][b] = T(0);

        for (int step = 1; step <= nwin; ++step) {
            const int w = (chunk + step) % nwin;   // own window last: its X tile stays for G
            const int c0 = w * DC;
            const int kend = min(DC, ldx - c0);    // a multiple of V (ldx is)
            // readers of Xs / Ws (the last window's Z pass, the previous tile's G pass) are done
            __syncthreads();
#pragma unroll
            for (int q = 0; q < MT * DC / V / NT; ++q) {
                const int v = tid + NT * q;
                const int jr = v / (DC / V), cc = (v % (DC / V)) * V;
                gl_vec16<T> x = {};
                if (j0 + jr < jend && cc < kend)
                    x = gl_load16(X + (long long)(j0 + jr) * ldx + c0 + cc);
                gl_store16(Xs + jr * DCP + cc, x);
            }
            if (nwin > 1 || first) {               // one window: the rows stay for the split
#pragma unroll
                for (int q = 0; q < TR * DC / V / NT; ++q) {
                    const int v = tid + NT * q;
                    const int ir = v / (DC / V), cc = (v % (DC / V)) * V;
                    gl_vec16<T> x = {};
                    if (row0 + ir < R && cc < kend)
                        x = gl_load16(W + (long long)(row0 + ir) * ldw + c0 + cc);
                    gl_store16(Ws + ir * DCP + cc, x);
                }
            }
            __syncthreads();                       // the window's tiles are visible
#pragma unroll 4
            for (int kk = 0; kk < kend; kk += V) {
                gl_vec16<T> xv[ZE];
#pragma unroll
                for (int b = 0; b < ZE; ++b)
                    xv[b] = gl_load16(Xs + (tx + TX * b) * DCP + kk);
#pragma unroll
                for (int a = 0; a < ZR; ++a) {
                    const gl_vec16<T> wv = gl_load16(Ws + (ty + TY * a) * DCP + kk);
#pragma unroll
                    for (int b = 0; b < ZE; ++b)
#pragma unroll
                        for (int e = 0; e < V; ++e)
                            z[a][b] += wv.v[e] * xv[b].v[e];
                }
            }
        }
        first = false;

        // epilogue in registers; D to shared memory.  Rows >= R and examples >= jend give D = 0,
        // so the G pass needs no bounds.  Ds's previous readers finished before this tile's
        // first barrier.
#pragma unroll
        for (int a = 0; a < ZR; ++a) {
            const bool row_ok = row0 + ty + TY * a < R;
#pragma unroll
            for (int b = 0; b < ZE; ++b) {
                const int j = j0 + tx + TX * b;
                T dv = T(0);
                if (row_ok && j < jend) {
                    const T r = z[a][b] - Yt[(long long)orow[a] * m + j];
                    dv = gl_lp_epilogue(r, pr[a], lacc[a]);
                }
                Ds[(tx + TX * b) * TRP + ty + TY * a] = dv;
            }
        }
        __syncthreads();                           // D of the tile is visible

        // G[ty*GR + a, window col] += sum_j D[j, ty*GR + a] X[j, col]  (Xs holds own window)
        const int jn = min(MT, jend - j0);
        for (int jj = 0; jj < jn; ++jj) {
            const gl_vec16<T> dv = gl_load16(Ds + jj * TRP + ty * GR);
#pragma unroll
            for (int g = 0; g < GG; ++g) {
                const gl_vec16<T> xv = gl_load16(Xs + jj * DCP + (tx + TX * g) * V);
#pragma unroll
                for (int a = 0; a < GR; ++a)
#pragma unroll
                    for (int e = 0; e < V; ++e)
                        gacc[a][g * V + e] += dv.v[a] * xv.v[e];
            }
        }
    }

    // G: each (row, column < d) of the block's window, once.
    const long long gbase = (long long)s * R;
#pragma unroll
    for (int a = 0; a < GR; ++a) {
        const int i = row0 + ty * GR + a;
        if (i >= R)
            continue;
#pragma unroll
        for (int g = 0; g < GG; ++g)
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const int c = chunk * DC + (tx + TX * g) * V + e;
                if (c < d)
                    Gpart[(gbase + i) * ldg + c] = gacc[a][g * V + e];
            }
    }

    // L: the TX partial sums of each row, added in a fixed order (deterministic).
    if (chunk != 0)
        return;                                    // uniform per block: no barrier skipped
#pragma unroll
    for (int a = 0; a < ZR; ++a)
        Ls[(ty + TY * a) * TX + tx] = lacc[a];
    __syncthreads();
    if (tid < TR && row0 + tid < R) {
        T total = T(0);
        for (int t = 0; t < TX; ++t)
            total += Ls[tid * TX + t];
        Lpart[gbase + row0 + tid] = total;
    }
}

template __global__ void gl_xpass<float>(const float*, int, const float*, int, const float*,
                                         const float*, float*, int, float*, int, int, int, int,
                                         int, long long*);
template __global__ void gl_xpass<double>(const double*, int, const double*, int, const double*,
                                          const double*, double*, int, double*, int, int, int,
                                          int, int, long long*);
