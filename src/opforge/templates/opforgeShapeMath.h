// opforge shape arithmetic and launch limits, shared by generated plugins and kernel launchers.
// Part of opforge (Apache-2.0).
#pragma once

#include <cstdint>
#include <cstdio>

namespace opforge
{

// Floor division and modulo as TVM defines them (exact for negative operands too).
inline int64_t floorDiv(int64_t a, int64_t b) noexcept
{
    int64_t const q = a / b;
    return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;
}

inline int64_t floorMod(int64_t a, int64_t b) noexcept
{
    return a - floorDiv(a, b) * b;
}

// Why a launch failed, for the plugin's log (filled by the launcher, which cannot log itself).
struct LaunchFailure
{
    char message[320]{};
};

// CUDA's limits on a launch: grid.x <= 2^31 - 1, grid.y and grid.z <= 65535, block.x/y <= 1024, block.z <= 64,
// at most 1024 threads per block. Computed in int64, before anything is narrowed to unsigned.
inline bool launchFits(int64_t const grid[3], int64_t const block[3]) noexcept
{
    bool const gridOk = grid[0] >= 1 && grid[0] <= 2147483647 && grid[1] >= 1 && grid[1] <= 65535 && grid[2] >= 1
        && grid[2] <= 65535;
    bool const blockOk = block[0] >= 1 && block[0] <= 1024 && block[1] >= 1 && block[1] <= 1024 && block[2] >= 1
        && block[2] <= 64 && block[0] * block[1] * block[2] <= 1024;
    return gridOk && blockOk;
}

inline void describeLaunch(LaunchFailure& why, char const* kernel, int64_t const grid[3], int64_t const block[3],
    int64_t sharedMem, int64_t sharedMemLimit) noexcept
{
    std::snprintf(why.message, sizeof(why.message),
        "kernel %s: grid (%lld, %lld, %lld), block (%lld, %lld, %lld), %lld bytes of dynamic shared memory exceed "
        "CUDA's limits (grid.x <= 2147483647, grid.y/z <= 65535, 1024 threads per block, %lld bytes of shared "
        "memory): the input shapes are too large for this plugin",
        kernel, static_cast<long long>(grid[0]), static_cast<long long>(grid[1]), static_cast<long long>(grid[2]),
        static_cast<long long>(block[0]), static_cast<long long>(block[1]), static_cast<long long>(block[2]),
        static_cast<long long>(sharedMem), static_cast<long long>(sharedMemLimit));
}

} // namespace opforge
