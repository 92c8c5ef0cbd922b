#include "host/sys/perf_event.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace fb {

int perf_event_open(perf_event_attr* attr, pid_t tid, int cpu, int group_fd) {
    return int(::syscall(SYS_perf_event_open, attr, tid, cpu, group_fd, PERF_FLAG_FD_CLOEXEC));
}

}  // namespace fb
