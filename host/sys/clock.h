// CLOCK_MONOTONIC in nanoseconds: the clock the kernel's tracepoints are stamped with (ftrace's
// "mono"), so the neighbour's slices, the guest's records and each phase's evidence window line
// up with kernel events.
#pragma once

#include <time.h>

#include <cstdint>

namespace fb {

inline int64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace fb
