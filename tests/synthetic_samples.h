// TSC samples with a known centre for the comparison tests (compare, fleet).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace fb::test {

// Normal around `center` with a spread like this machine's (a few percent), as integers so that
// ties happen as they do in real runs.
inline std::vector<uint64_t> samples(uint64_t seed, size_t n, double center, double spread) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(center, spread);
    std::vector<uint64_t> v;
    for (size_t i = 0; i < n; ++i) v.push_back(uint64_t(std::llround(std::max(1.0, d(rng)))));
    return v;
}

}  // namespace fb::test
