// Runs gl_xpass<EMU_T> (kernels/xpass.cu, headers inlined by the loader) under cuda_emu.h.
// Usage: driver DIR.  DIR/params.txt holds
//   R m d k m_per_split S ldw ldx ldg grid.x grid.y grid.z block.x use_clock
// and DIR holds raw native-endian arrays W.bin (R, ldw), X.bin (m, ldx), Yt.bin (k, m),
// prow.bin (R,), Gpart.bin (S, R, ldg) (initial contents: the kernel must leave padding
// columns alone) and clock.bin (1 int64).  Gpart.bin, Lpart.bin and clock.bin are rewritten.
#include "cuda_emu.h"
#include XPASS_SOURCE

#include <cstdio>
#include <string>

template <typename V>
static std::vector<V> read_bin(const std::string& path, size_t n)
{
    std::vector<V> out(n);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(out.data(), sizeof(V), n, f) != n) {
        std::fprintf(stderr, "driver: cannot read %zu values from %s\n", n, path.c_str());
        std::exit(2);
    }
    std::fclose(f);
    return out;
}

template <typename V>
static void write_bin(const std::string& path, const std::vector<V>& v)
{
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(V), v.size(), f) != v.size()) {
        std::fprintf(stderr, "driver: cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: driver DIR\n");
        return 2;
    }
    const std::string dir = argv[1];
    FILE* f = std::fopen((dir + "/params.txt").c_str(), "r");
    int R, m, d, k, mps, S, ldw, ldx, ldg, use_clock;
    dim3 grid, block;
    if (!f || std::fscanf(f, "%d %d %d %d %d %d %d %d %d %u %u %u %u %d", &R, &m, &d, &k, &mps,
                          &S, &ldw, &ldx, &ldg, &grid.x, &grid.y, &grid.z, &block.x,
                          &use_clock) != 14) {
        std::fprintf(stderr, "driver: bad params.txt\n");
        return 2;
    }
    std::fclose(f);
    using T = EMU_T;
    auto W = read_bin<T>(dir + "/W.bin", (size_t)R * ldw);
    auto X = read_bin<T>(dir + "/X.bin", (size_t)m * ldx);
    auto Yt = read_bin<T>(dir + "/Yt.bin", (size_t)k * m);
    auto prow = read_bin<T>(dir + "/prow.bin", (size_t)R);
    auto Gpart = read_bin<T>(dir + "/Gpart.bin", (size_t)S * R * ldg);
    auto Lpart = std::vector<T>((size_t)S * R, T(-12345));
    auto clk = read_bin<long long>(dir + "/clock.bin", 1);
    long long* clock_ptr = use_clock ? clk.data() : nullptr;
    emu::launch(grid, block, [&] {
        gl_xpass<T>(W.data(), ldw, X.data(), ldx, Yt.data(), prow.data(), Gpart.data(), ldg,
                    Lpart.data(), R, m, d, k, mps, clock_ptr);
    });
    write_bin(dir + "/Gpart.bin", Gpart);
    write_bin(dir + "/Lpart.bin", Lpart);
    write_bin(dir + "/clock.bin", clk);
    return 0;
}
