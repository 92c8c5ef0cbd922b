// perf_event_open(2), which glibc does not wrap: close-on-exec always.
#pragma once

#include <linux/perf_event.h>
#include <sys/types.h>

namespace fb {

// -1 with errno on failure. tid 0: the calling thread; tid -1 with a cpu: every task on that CPU.
int perf_event_open(perf_event_attr* attr, pid_t tid, int cpu, int group_fd);

}  // namespace fb
