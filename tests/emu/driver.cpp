// Runs gl_xpass<EMU_T> (kernels/xpass.cu, headers inlined by the loader) under cuda_emu.h.
// Usage: driver DIR (or driver --constants: the kernel's tile constants).  DIR/params.txt holds
//   R m d k m_per_split S ldw ldx ldg grid.x grid.y grid.z block.x use_clock
//   shared_bytes concurrency seed
// and DIR holds raw native-endian arrays W.bin (R, ldw), X.bin (m, ldx), Yt.bin (k, m),
// prow.bin (R,), Gpart.bin (S, R, ldg) (initial contents: the kernel must leave padding
// columns alone) and clock.bin (1 int64).  Gpart.bin, Lpart.bin and clock.bin are rewritten.
//
// Global buffers: each array sits between two guard zones of GUARD bytes filled with 0xFF (NaN
// for float and double), outside the region registered for vector accesses; a guard byte that
// changed is reported (exit 68).  Built with EMU_ASAN, the arrays are plain exact-size heap
// allocations instead, so AddressSanitizer reports any access past them.
#include "cuda_emu.h"
#include XPASS_SOURCE

#include <new>
#include <string>

constexpr int GUARD_EXIT = 68;
#ifdef EMU_ASAN
constexpr size_t GUARD = 0;
#else
constexpr size_t GUARD = 4096;
#endif

// An array of n V between guard zones; data() is 16-byte aligned.
template <typename V>
struct Guarded {
    Guarded(size_t n_, const char* name_) : n(n_), name(name_)
    {
        base = static_cast<unsigned char*>(
            ::operator new[](GUARD + n * sizeof(V) + GUARD, std::align_val_t(16)));
        std::memset(base, 0xFF, GUARD);
        std::memset(base + GUARD + n * sizeof(V), 0xFF, GUARD);
        emu::register_global(data(), n * sizeof(V), name);
    }
    ~Guarded() { ::operator delete[](base, std::align_val_t(16)); }
    Guarded(const Guarded&) = delete;
    V* data() { return reinterpret_cast<V*>(base + GUARD); }
    void check_guards() const
    {
        const unsigned char* hi = base + GUARD + n * sizeof(V);
        for (size_t b = 0; b < GUARD; ++b)
            if (base[b] != 0xFF || hi[b] != 0xFF) {
                std::fprintf(stderr, "EMU FAULT: guard zone of %s written (%s the array, byte "
                             "%zu)\n", name, base[b] != 0xFF ? "before" : "after", b);
                std::exit(GUARD_EXIT);
            }
    }
    size_t n;
    const char* name;
    unsigned char* base;
};

template <typename V>
static void read_bin(const std::string& path, Guarded<V>& out)
{
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(out.data(), sizeof(V), out.n, f) != out.n) {
        std::fprintf(stderr, "driver: cannot read %zu values from %s\n", out.n, path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

template <typename V>
static void write_bin(const std::string& path, Guarded<V>& v)
{
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(V), v.n, f) != v.n) {
        std::fprintf(stderr, "driver: cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

int main(int argc, char** argv)
{
    if (argc == 2 && std::string(argv[1]) == "--constants") {   // for the mirror test
        using L = gl_xpass_layout<EMU_T>;
        std::printf("TR=%d MT=%d DC=%d MINB=%d THREADS=%d SMEM=%d\n", L::TR, L::MT, L::DC,
                    gl_xpass_tiles<EMU_T>::MINB, GL_XPASS_THREADS, gl_xpass_smem_bytes<EMU_T>());
        return 0;
    }
    if (argc != 2) {
        std::fprintf(stderr, "usage: driver DIR | driver --constants\n");
        return 2;
    }
    const std::string dir = argv[1];
    FILE* f = std::fopen((dir + "/params.txt").c_str(), "r");
    int R, m, d, k, mps, S, ldw, ldx, ldg, use_clock, concurrency;
    unsigned seed;
    size_t smem;
    dim3 grid, block;
    if (!f || std::fscanf(f, "%d %d %d %d %d %d %d %d %d %u %u %u %u %d %zu %d %u", &R, &m, &d,
                          &k, &mps, &S, &ldw, &ldx, &ldg, &grid.x, &grid.y, &grid.z, &block.x,
                          &use_clock, &smem, &concurrency, &seed) != 17) {
        std::fprintf(stderr, "driver: bad params.txt\n");
        return 2;
    }
    std::fclose(f);
    using T = EMU_T;
    Guarded<T> W((size_t)R * ldw, "W"), X((size_t)m * ldx, "X"), Yt((size_t)k * m, "Yt");
    Guarded<T> prow((size_t)R, "prow"), Gpart((size_t)S * R * ldg, "Gpart");
    Guarded<T> Lpart((size_t)S * R, "Lpart");
    Guarded<long long> clk(1, "clock");
    read_bin(dir + "/W.bin", W);
    read_bin(dir + "/X.bin", X);
    read_bin(dir + "/Yt.bin", Yt);
    read_bin(dir + "/prow.bin", prow);
    read_bin(dir + "/Gpart.bin", Gpart);
    read_bin(dir + "/clock.bin", clk);
    std::fill(Lpart.data(), Lpart.data() + Lpart.n, T(-12345));
    long long* clock_ptr = use_clock ? clk.data() : nullptr;
    emu::launch(grid, block, smem, concurrency, seed, [&] {
        gl_xpass<T>(W.data(), ldw, X.data(), ldx, Yt.data(), prow.data(), Gpart.data(), ldg,
                    Lpart.data(), R, m, d, k, mps, clock_ptr);
    });
    W.check_guards();
    X.check_guards();
    Yt.check_guards();
    prow.check_guards();
    Gpart.check_guards();
    Lpart.check_guards();
    clk.check_guards();
    write_bin(dir + "/Gpart.bin", Gpart);
    write_bin(dir + "/Lpart.bin", Lpart);
    write_bin(dir + "/clock.bin", clk);
    return 0;
}
