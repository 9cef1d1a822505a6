// X-pass: both passes over X of one lp step, fused, for R = C*k independent rows w_i (d,).
// NumPy twin: gpulinear.cuda.xpass.xpass_twin; launcher and split planner: gpulinear.cuda.xpass.
//
// For row i (config i // k, output o = i % k) and example j:
//   r_ij = <w_i, x_j> - Yt[o, j]
//   Lpart[s, i]    = sum_{j in split s} |r_ij|^p                  (not divided by p or m)
//   Gpart[s, i, :] = sum_{j in split s} |r_ij|^(p-2) r_ij x_j     (not divided by m)
// Z = W X^T and D = l'(R) never reach global memory: a block owns TR rows and one example split,
// streams the split's X tiles (MT examples x DC columns: one "window" of d) through shared
// memory, computes its Z tile in registers, applies the loss epilogue in registers, keeps D
// (MT x TR) in shared memory and accumulates G += D^T X_tile in registers.  One block writes
// each output element (no atomics), always in the same order: results are bitwise deterministic.
//
// Grid (ceil(R / TR), S, 1), 128 threads, shared_mem = gl_xpass_smem_bytes<T>() (dynamic: it is
// above the 48 KB static limit; gpulinear.cuda.xpass.load_kernel raises the kernel's limit once;
// a launch with less traps).
//
// Pipeline.  The block's work is a sequence of stages, each reading one X window tile from
// shared memory; X tiles are double-buffered: stage q+1's tile is copied with cp.async while
// stage q computes.
//   d <= DC (one window, Ethanol's d = 128): one stage per tile; the W rows are loaded once for
//     the split; G accumulates in registers over the whole split and is written once.
//   d > DC (nwin windows, MNIST's 784 = 7 windows): per tile, nwin Z stages (window w of X and
//     of W; Z is summed over the windows, so Z is computed ONCE per tile, not once per window),
//     the epilogue, G of the last window from the tile still in shared memory, then nwin - 1 G
//     stages that reload windows 0..nwin-2 of the tile and add D^T X_w into Gpart (the block
//     owns those elements: written at the first tile, read-modify-written after).  Costs per
//     tile: X read twice from L2 (Z and G), W once, G read+written once per window.
//
// Inputs are zero-padded: W (R, ldw) and X (m, ldx) hold zeros in columns d.., and ldw, ldx are
// multiples of 16 bytes with 16-byte aligned bases, so every global and shared access of the
// tiles moves 16 bytes (float4 / double2) and the padding adds zeros to the dot products.
//
// Floating point: every rounding step goes through gl_fma / gl_widen / gl_narrow (gl_common.cuh),
// so CuPy's -ftz=true does not flush float32 denormals and the emulation rounds identically.
#include "gl_common.cuh"

// 128 threads as TY x TX = 8 x 16: a warp is two values of ty and all 16 of tx, so W and D reads
// (indexed by ty) are two-address broadcasts and X reads (indexed by tx) hit 16 distinct rows.
constexpr int GL_XPASS_THREADS = 128;
constexpr int GL_XPASS_TY = 8;
constexpr int GL_XPASS_TX = 16;

// Tiles (estimated, not timed: no GPU was available; chosen by counting shared-memory
// wavefronts per FMA for sm_90):
//   float : TR = 32 rows, MT = 32 examples, DC = 128 columns.  Z micro-tile 4 rows x 2 examples,
//           G micro-tile 4 rows x 8 columns: per 4 k of Z, 6 LDS.128 (~8 wavefronts) for 32 FFMA;
//           per example of G, 3 LDS.128 (~5 wavefronts) for 32 FFMA: FMA-bound on paper.
//   double: TR = 16, MT = 16, DC = 128; Z micro-tile 2 x 1, G micro-tile 2 x 8.
// MINB: blocks per SM that __launch_bounds__ asks ptxas to fit (65536 registers / (128 threads *
// MINB) = 128 registers a thread at MINB = 4).  Measured for sm_90 with nvcc 13.0
// (`nvcc -arch=sm_90 --cubin -Xptxas -v` on the loader's source; tests/test_kernels_nvcc.py
// asserts these numbers): float 128 registers, double 128, 0 bytes spilled, 1 barrier.  Without
// the bound ptxas takes 140 (float) and 176 (double): 3 and 2 blocks per SM.
// Shared memory per block (gl_xpass_smem_bytes): float 54784 B, double 51968 B; with the 1 KB
// the driver reserves per block, 4 blocks take 223 / 212 KB of the 228 KB an H100/H200 SM has.
// So 4 blocks (16 warps) per SM, limited by registers and shared memory together.
template <typename T> struct gl_xpass_tiles;
template <> struct gl_xpass_tiles<float> {
    static constexpr int TR = 32, MT = 32, DC = 128, MINB = 4;
};
template <> struct gl_xpass_tiles<double> {
    static constexpr int TR = 16, MT = 16, DC = 128, MINB = 4;
};

// Shared-memory layout, in elements of T: two X tile buffers (MT x DCP), the W rows (TR x DC),
// D (MT x TRP, example-major; reused for the final loss reduction).
template <typename T> struct gl_xpass_layout {
    static constexpr int TR = gl_xpass_tiles<T>::TR, MT = gl_xpass_tiles<T>::MT;
    static constexpr int DC = gl_xpass_tiles<T>::DC;
    static constexpr int V = 16 / sizeof(T);      // T per 16-byte vector
    static constexpr int DCP = DC + V;            // X row pitch: 16-byte aligned, and an odd
                                                  // number of 16-byte groups, so 16 rows read at
                                                  // one column fall in distinct bank groups
    static constexpr int TRP = TR + V;            // D row pitch
    static constexpr int XBUF = MT * DCP;
    static constexpr int WOFF = 2 * XBUF;
    static constexpr int DOFF = WOFF + TR * DC;
    static constexpr int ELEMS = DOFF + MT * TRP;
};

template <typename T>
__host__ __device__ constexpr int gl_xpass_smem_bytes()
{
    return gl_xpass_layout<T>::ELEMS * (int)sizeof(T);
}

// l_p epilogue of one residual: D = |r|^(p-2) r returned, |r|^p added to `loss`.  pk = 2 or 4
// take the fast paths (the common losses); any other p is computed in double (exact widening,
// one rounding back), |0|^(p - 2) = 0 for p > 2.
template <typename T>
__device__ __forceinline__ T gl_lp_epilogue(T r, int pk, T p, T& loss)
{
    if (pk == 2) {
        loss = gl_fma(r, r, loss);
        return r;
    }
    if (pk == 4) {
        const T r2 = gl_mul(r, r);
        loss = gl_fma(r2, r2, loss);
        return gl_mul(r2, r);
    }
    const double rd = gl_widen(r);
    const double a = fabs(rd);
    double t;
    if constexpr (sizeof(T) == 4)    // exp2/log2 inline; pow is a call whose spills cost
        t = a > 0.0 ? exp2((gl_widen(p) - 2.0) * log2(a)) : 0.0;  // 32 B at 128 registers
    else                             // (double's ~10-ulp error here is far below float's)
        t = pow(a, p - 2.0);
    loss = gl_add(loss, gl_narrow<T>(t * (a * a)));
    return gl_narrow<T>(t * rd);
}

template <typename T>
__global__ void __launch_bounds__(GL_XPASS_THREADS, gl_xpass_tiles<T>::MINB) gl_xpass(
    const T* __restrict__ W, int ldw,      // (R, ldw) rows w_i, columns d..ldw-1 zero
    const T* __restrict__ X, int ldx,      // (m, ldx) examples, columns d..ldx-1 zero
    const T* __restrict__ Yt,              // (k, m) targets, row o of Yt for rows i with i % k == o
    const T* __restrict__ prow,            // (R,) p of row i (fast paths p == 2 and p == 4)
    T* __restrict__ Gpart, int ldg,        // (S, R, ldg) out; columns d..ldg-1 untouched
    T* __restrict__ Lpart,                 // (S, R) out
    int R, int m, int d, int k, int m_per_split,
    long long* clock)                      // step counter on the device (may be null)
{
    using Lay = gl_xpass_layout<T>;
    constexpr int TR = Lay::TR, MT = Lay::MT, DC = Lay::DC, V = Lay::V;
    constexpr int DCP = Lay::DCP, TRP = Lay::TRP;
    constexpr int TY = GL_XPASS_TY, TX = GL_XPASS_TX, NT = GL_XPASS_THREADS;
    constexpr int ZR = TR / TY;            // Z micro-tile: rows ty + TY*a, examples tx + TX*b
    constexpr int ZE = MT / TX;
    constexpr int GR = TR / TY;            // G micro-tile: rows ty*GR + a, columns (tx + TX*g)*V + e
    constexpr int GG = DC / (TX * V);
    static_assert(TY * TX == NT, "thread layout");
    static_assert(TR % TY == 0 && MT % TX == 0 && DC % (TX * V) == 0, "tiles vs threads");
    static_assert(GR == V, "a thread's G rows are one 16-byte vector of D");
    static_assert((MT * DC / V) % NT == 0 && (TR * DC / V) % NT == 0, "tile loads");
    static_assert(DCP % V == 0 && (DCP / V) % 2 == 1, "aligned, bank-conflict-free X pitch");
    static_assert(TR * TX <= MT * TRP, "the loss reduction fits in D's space");

    GL_DYNAMIC_SHARED(unsigned char, gl_smem);
    T* const smem = reinterpret_cast<T*>(gl_smem);
    T* const Ws = smem + Lay::WOFF;        // W rows of the block, one window
    T* const Ds = smem + Lay::DOFF;        // D = l'(R) of the tile, example-major
    T* const Ls = Ds;                      // per-thread partial losses, after the last tile

    // a launch with less shared memory than the layout needs would corrupt silently: stop it
    if (gl_dynamic_smem_bytes() < (unsigned)gl_xpass_smem_bytes<T>())
        gl_trap("gl_xpass: launched with less dynamic shared memory than gl_xpass_smem_bytes");

    const int tid = threadIdx.x;
    const int ty = tid / TX, tx = tid % TX;
    const int row0 = blockIdx.x * TR;
    const int s = blockIdx.y;
    const int jbeg = s * m_per_split;
    const int jend = min(m, jbeg + m_per_split);
    const int nwin = (d + DC - 1) / DC;
    const int ntiles = jend > jbeg ? (jend - jbeg + MT - 1) / MT : 0;
    const int L = 2 * nwin - 1;            // stages per tile: nwin Z windows, nwin - 1 G reloads
    const int nst = ntiles * L;
    const long long gbase = (long long)s * R;

    if (clock != nullptr && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && tid == 0)
        clock[0] += 1;

    T gacc[GR][GG * V];
    T z[ZR][ZE];
    T lacc[ZR];
#pragma unroll
    for (int a = 0; a < ZR; ++a) {
        lacc[a] = T(0);
#pragma unroll
        for (int c = 0; c < GG * V; ++c)
            gacc[a][c] = T(0);
    }

    // X window tile of stage q -> buffer q & 1 (rows past the split and columns past ldx: 0).
    auto issue_x = [&](int q) {
        const int t = q / L, r = q % L;
        const int w = r < nwin ? r : r - nwin;
        const int j0 = jbeg + t * MT, c0 = w * DC, kend = min(DC, ldx - c0);
        T* const Xb = smem + (q & 1) * Lay::XBUF;
#pragma unroll
        for (int u = 0; u < MT * DC / V / NT; ++u) {
            const int v = tid + NT * u;
            const int jr = v / (DC / V), cc = (v % (DC / V)) * V;
            const bool ok = j0 + jr < jend && cc < kend;
            gl_cp_async16(Xb + jr * DCP + cc, ok ? X + (long long)(j0 + jr) * ldx + c0 + cc : X, ok);
        }
    };
    // W rows of window w -> Ws (rows past R and columns past ldw: 0).
    auto issue_w = [&](int w) {
        const int c0 = w * DC, kend = min(DC, ldw - c0);
#pragma unroll
        for (int u = 0; u < TR * DC / V / NT; ++u) {
            const int v = tid + NT * u;
            const int ir = v / (DC / V), cc = (v % (DC / V)) * V;
            const bool ok = row0 + ir < R && cc < kend;
            gl_cp_async16(Ws + ir * DC + cc, ok ? W + (long long)(row0 + ir) * ldw + c0 + cc : W, ok);
        }
    };
    // gacc -> Gpart's columns of window w: stored (first) or added (read-modify-write).
    auto flush_g = [&](int w, bool first) {
#pragma unroll
        for (int a = 0; a < GR; ++a) {
            const int i = row0 + ty * GR + a;
            if (i >= R)
                continue;
#pragma unroll
            for (int g = 0; g < GG; ++g)
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    const int c = w * DC + (tx + TX * g) * V + e;
                    if (c < d) {
                        T* const gp = Gpart + (gbase + i) * ldg + c;
                        *gp = first ? gacc[a][g * V + e] : gl_add(*gp, gacc[a][g * V + e]);
                    }
                }
        }
    };

    if (nst > 0)
        issue_x(0);
    gl_cp_async_commit();
    for (int q = 0; q < nst; ++q) {
        const int t = q / L, r = q % L;
        const bool zstage = r < nwin;
        const int w = zstage ? r : r - nwin;
        const int j0 = jbeg + t * MT;
        const int kend = min(DC, ldx - w * DC);        // a multiple of V (ldx is)
        const T* const Xb = smem + (q & 1) * Lay::XBUF;

        // W rows of the window: once per split with one window, at every Z stage with several
        if (zstage && (nwin > 1 || t == 0))
            issue_w(w);
        gl_cp_async_commit();
        if (q + 1 < nst)
            issue_x(q + 1);                            // overlaps this stage's FMAs
        gl_cp_async_commit();
        gl_cp_async_wait<1>();                         // this thread's X(q) and W copies landed
        __syncthreads();                               // ... and every thread's

        bool g_now = !zstage;
        if (zstage) {
            // this window's partial dot products, then added to Z: chains of <= DC terms, not
            // d (float32: d = 300 gave up to 3x NumPy's error with one chain)
            T zw[ZR][ZE];
#pragma unroll
            for (int a = 0; a < ZR; ++a)
#pragma unroll
                for (int b = 0; b < ZE; ++b)
                    zw[a][b] = T(0);
#pragma unroll 2
            for (int kk = 0; kk < kend; kk += V) {
                gl_vec16<T> xv[ZE];
#pragma unroll
                for (int b = 0; b < ZE; ++b)
                    xv[b] = gl_load16(Xb + (tx + TX * b) * DCP + kk);
#pragma unroll
                for (int a = 0; a < ZR; ++a) {
                    const gl_vec16<T> wv = gl_load16(Ws + (ty + TY * a) * DC + kk);
#pragma unroll
                    for (int b = 0; b < ZE; ++b)
#pragma unroll
                        for (int e = 0; e < V; ++e)
                            zw[a][b] = gl_fma(wv.v[e], xv[b].v[e], zw[a][b]);
                }
            }
#pragma unroll
            for (int a = 0; a < ZR; ++a)
#pragma unroll
                for (int b = 0; b < ZE; ++b)
                    z[a][b] = r == 0 ? zw[a][b] : gl_add(z[a][b], zw[a][b]);
            if (r == nwin - 1) {
                // epilogue in registers; D to shared memory.  Rows >= R and examples >= jend
                // give D = 0.  Ds's previous readers finished before this stage's barrier.
                // (p and o = i % k of a row are re-read per tile, not held in 12 registers
                // for the whole kernel: that kept ptxas from fitting 128 without spills)
#pragma unroll
                for (int a = 0; a < ZR; ++a) {
                    const int i = row0 + ty + TY * a;
                    const bool row_ok = i < R;
                    const T p = row_ok ? prow[i] : T(2);
                    const double pw = gl_widen(p);
                    const int pk = pw == 2.0 ? 2 : (pw == 4.0 ? 4 : 0);
                    const T* const yrow = Yt + (long long)(row_ok ? i % k : 0) * m;
#pragma unroll
                    for (int b = 0; b < ZE; ++b) {
                        const int j = j0 + tx + TX * b;
                        T dv = T(0);
                        if (row_ok && j < jend) {
                            const T rr = gl_sub(z[a][b], yrow[j]);
                            dv = gl_lp_epilogue(rr, pk, p, lacc[a]);
                        }
                        Ds[(tx + TX * b) * TRP + ty + TY * a] = dv;
                    }
                }
                __syncthreads();                       // D of the tile is visible
                g_now = true;                          // G of this window: its tile is here
            }
        }
        if (g_now) {
            if (nwin > 1) {
#pragma unroll
                for (int a = 0; a < GR; ++a)
#pragma unroll
                    for (int c = 0; c < GG * V; ++c)
                        gacc[a][c] = T(0);
            }
            // G[ty*GR + a, window col] += sum_j D[j, ty*GR + a] X[j, col]
            const int jn = min(MT, jend - j0);
            for (int jj = 0; jj < jn; ++jj) {
                const gl_vec16<T> dv = gl_load16(Ds + jj * TRP + ty * GR);
#pragma unroll
                for (int g = 0; g < GG; ++g) {
                    const gl_vec16<T> xv = gl_load16(Xb + jj * DCP + (tx + TX * g) * V);
#pragma unroll
                    for (int a = 0; a < GR; ++a)
#pragma unroll
                        for (int e = 0; e < V; ++e)
                            gacc[a][g * V + e] = gl_fma(dv.v[a], xv.v[e], gacc[a][g * V + e]);
                }
            }
            if (nwin > 1)
                flush_g(w, t == 0);
        }
        __syncthreads();                               // this stage's readers of Xb, Ws, Ds are done
    }

    // G with one window: accumulated over the split in registers, written once.  A split with
    // no examples (the planner makes none) writes zeros.
    if (nwin == 1 || ntiles == 0)
        for (int w = 0; w < nwin; ++w)
            flush_g(w, true);

    // L: the TX partial sums of each row, added in a fixed order (deterministic).  Ls is D's
    // space, whose last readers finished before the last stage's closing barrier.
#pragma unroll
    for (int a = 0; a < ZR; ++a)
        Ls[(ty + TY * a) * TX + tx] = lacc[a];
    __syncthreads();                                   // the partial losses are visible
    if (tid < TR && row0 + tid < R) {
        T total = T(0);
        for (int u = 0; u < TX; ++u)
            total = gl_add(total, Ls[tid * TX + u]);
        Lpart[gbase + row0 + tid] = total;
    }
}

template __global__ void gl_xpass<float>(const float*, int, const float*, int, const float*,
                                         const float*, float*, int, float*, int, int, int, int,
                                         int, long long*);
template __global__ void gl_xpass<double>(const double*, int, const double*, int, const double*,
                                          const double*, double*, int, double*, int, int, int,
                                          int, int, long long*);
