// opforge shape arithmetic, shared by generated plugins and kernel launchers. Part of opforge (Apache-2.0).
#pragma once

#include <cstdint>

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

} // namespace opforge
