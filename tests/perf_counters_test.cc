// Host counters (libpfm4 encoding, guest/host split, multiplex scaling, real software counts, honest
// hardware "unavailable") and the Intel PCM sidecar. Assertions about this host are made against
// what the test itself observes from the kernel, so they hold on a PMU-less VM and on bare metal.
#include <gtest/gtest.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <time.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "host/counters/pcm_sidecar.h"
#include "host/counters/perf_counters.h"

namespace fb {
namespace {

using namespace std::chrono_literals;

const CounterValue* find(const std::vector<CounterValue>& v, const std::string& name) {
    for (const auto& c : v)
        if (c.name == name) return &c;
    return nullptr;
}

double thread_cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

// Spins for `d` of wall time; returns the CPU time the thread actually got (the build machines have
// two cores and other jobs: wall time is no reference for task-clock, the thread's CPU clock is).
double busy_for(std::chrono::milliseconds d) {
    double cpu0 = thread_cpu_ns();
    auto end = std::chrono::steady_clock::now() + d;
    volatile uint64_t x = 0;
    while (std::chrono::steady_clock::now() < end)
        for (int i = 0; i < 1000; ++i) x = x + uint64_t(i);
    return thread_cpu_ns() - cpu0;
}

// What the kernel says to a plain cycles counter on this thread: 0 if it opens, else errno. Asked as
// CounterGroup asks: user and kernel mode, then (if that is not permitted) user mode alone.
int raw_cycles_errno() {
    perf_event_attr a{};
    a.size = sizeof a;
    a.type = PERF_TYPE_HARDWARE;
    a.config = PERF_COUNT_HW_CPU_CYCLES;
    a.disabled = 1;
    int fd = int(syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
    if (fd < 0 && (errno == EACCES || errno == EPERM)) {
        int first = errno;
        a.exclude_kernel = a.exclude_hv = 1;
        fd = int(syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
        if (fd < 0 && (errno == EACCES || errno == EPERM)) errno = first;
    }
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno;
}

std::string cpu_vendor() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("vendor_id", 0) == 0) return line.substr(line.find(':') + 2);
    return "";
}

// ---- libpfm4 encoding ------------------------------------------------------------------------------

TEST(PerfEncoding, GenericEventsResolve) {
    EventEncoding c = encode_event("cycles", Split::all);
    EXPECT_EQ(c.attr.type, uint32_t(PERF_TYPE_HARDWARE));
    EXPECT_EQ(c.attr.config, uint64_t(PERF_COUNT_HW_CPU_CYCLES));
    EXPECT_EQ(c.pmu, "cpu");
    EXPECT_EQ(c.pfm_name, "perf::PERF_COUNT_HW_CPU_CYCLES");

    EXPECT_EQ(encode_event("instructions", Split::all).attr.config, uint64_t(PERF_COUNT_HW_INSTRUCTIONS));

    // perf's cache-event naming: LL cache, read, miss = LL | READ << 8 | MISS << 16.
    EventEncoding llc = encode_event("LLC-load-misses", Split::all);
    EXPECT_EQ(llc.attr.type, uint32_t(PERF_TYPE_HW_CACHE));
    EXPECT_EQ(llc.attr.config, uint64_t(PERF_COUNT_HW_CACHE_LL | PERF_COUNT_HW_CACHE_OP_READ << 8 |
                                        PERF_COUNT_HW_CACHE_RESULT_MISS << 16));
    EXPECT_EQ(llc.pmu, "cpu");

    EventEncoding tc = encode_event("task-clock", Split::all);
    EXPECT_EQ(tc.attr.type, uint32_t(PERF_TYPE_SOFTWARE));
    EXPECT_EQ(tc.attr.config, uint64_t(PERF_COUNT_SW_TASK_CLOCK));
    EXPECT_EQ(tc.pmu, "software");
    for (const auto& n : software_events()) EXPECT_NO_THROW(encode_event(n, Split::all)) << n;
}

TEST(PerfEncoding, PmuSpecificNames) {
    // libpfm4 only knows the PMU tables of the CPU it runs on (detected through CPUID).
    if (cpu_vendor() != "GenuineIntel") GTEST_SKIP() << "INST_RETIRED.ANY is an Intel event; CPU is " << cpu_vendor();
    EventEncoding e = encode_event("INST_RETIRED.ANY", Split::all);
    EXPECT_EQ(e.attr.type, uint32_t(PERF_TYPE_RAW));
    EXPECT_EQ(e.pmu, "cpu");
    EXPECT_NE(e.pfm_name.find("INST_RETIRED:ANY"), std::string::npos) << e.pfm_name;
}

TEST(PerfEncoding, UnknownNameListsNearMatches) {
    try {
        encode_event("cycels", Split::all);
        FAIL() << "an unknown event must throw";
    } catch (const std::invalid_argument& e) {
        std::string msg = e.what();
        EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
        EXPECT_NE(msg.find("\"cycels\""), std::string::npos) << msg;
        EXPECT_NE(msg.find("did you mean"), std::string::npos) << msg;
        EXPECT_NE(msg.find("cycles"), std::string::npos) << msg;
        EXPECT_NE(msg.find("flushbench probe"), std::string::npos) << msg;
        std::printf("[ message  ] %s\n", msg.c_str());
    }
    try {
        encode_event("LLC-lod-misses", Split::all);
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("llc-load-misses"), std::string::npos) << e.what();
    }
    EXPECT_THROW(encode_event("zzzzzzzzzzzzzzzzzzzz", Split::all), std::invalid_argument);
}

TEST(PerfEncoding, SplitDecidesExcludeGuestAndHost) {
    // libpfm4's own default is mh=1, i.e. exclude_guest: the split must override it either way.
    EventEncoding all = encode_event("cycles", Split::all);
    EXPECT_FALSE(all.attr.exclude_guest);
    EXPECT_FALSE(all.attr.exclude_host);
    EventEncoding guest = encode_event("cycles", Split::guest_only);
    EXPECT_TRUE(guest.attr.exclude_host);
    EXPECT_FALSE(guest.attr.exclude_guest);
    EventEncoding host = encode_event("cycles", Split::host_only);
    EXPECT_TRUE(host.attr.exclude_guest);
    EXPECT_FALSE(host.attr.exclude_host);
    // An explicit modifier in the name does not beat the split.
    EventEncoding mh = encode_event("cycles:mh", Split::guest_only);
    EXPECT_TRUE(mh.attr.exclude_host);
    EXPECT_FALSE(mh.attr.exclude_guest);
    // User and kernel mode are both counted: the guest kernel runs in ring 0.
    EXPECT_FALSE(all.attr.exclude_user);
    EXPECT_FALSE(all.attr.exclude_kernel);
}

// ---- Multiplex scaling --------------------------------------------------------------------------------

TEST(PerfScaling, ScalesByEnabledOverRunning) {
    ScaledCount full = scale_count(500, 1000, 1000);
    ASSERT_TRUE(full.value);
    EXPECT_DOUBLE_EQ(*full.value, 500.0);
    EXPECT_DOUBLE_EQ(full.scaling, 1.0);
    EXPECT_TRUE(full.unavailable.empty());

    ScaledCount half = scale_count(1000, 200, 100);  // counted half the time: twice the count
    ASSERT_TRUE(half.value);
    EXPECT_DOUBLE_EQ(*half.value, 2000.0);
    EXPECT_DOUBLE_EQ(half.scaling, 2.0);

    ScaledCount third = scale_count(7, 3'000'000, 1'000'000);
    EXPECT_DOUBLE_EQ(*third.value, 21.0);
    EXPECT_DOUBLE_EQ(third.scaling, 3.0);

    ScaledCount never = scale_count(0, 1000, 0);  // never on a counter: no value, not 0
    EXPECT_FALSE(never.value);
    EXPECT_NE(never.unavailable.find("never got a hardware counter"), std::string::npos) << never.unavailable;

    ScaledCount off = scale_count(0, 0, 0);
    EXPECT_FALSE(off.value);
    EXPECT_FALSE(off.unavailable.empty());
}

// ---- Counting on this host --------------------------------------------------------------------------

TEST(PerfCounters, SoftwareTaskClockCountsABusyLoop) {
    CounterGroup g = CounterGroup::open(0, software_events(), Split::all);
    ASSERT_TRUE(g.any_available());
    g.start();
    double cpu = busy_for(50ms);
    g.stop();
    auto v = g.read();
    ASSERT_EQ(v.size(), software_events().size());
    const CounterValue* tc = find(v, "task-clock");
    ASSERT_TRUE(tc);
    ASSERT_TRUE(tc->value) << tc->unavailable;
    // task-clock is the thread's CPU time; without kernel mode (perf_event_paranoid=2) a little less.
    EXPECT_GT(*tc->value, 0.5 * cpu) << "thread CPU time " << cpu << " ns";
    EXPECT_LT(*tc->value, 1.2 * cpu + 5e6) << "thread CPU time " << cpu << " ns";
    EXPECT_EQ(tc->unit, "ns");
    EXPECT_DOUBLE_EQ(tc->scaling, 1.0);
    EXPECT_NE(tc->source.find("software"), std::string::npos) << tc->source;
    for (const auto& c : v) {
        EXPECT_TRUE(c.value) << c.name << ": " << c.unavailable;
        std::printf("[ counter  ] %-16s %14.0f %s (%s)\n", c.name.c_str(), c.value.value_or(-1), c.unit.c_str(),
                    c.source.c_str());
    }

    // Counts are per phase: a second, idle phase reads far less task-clock.
    g.start();
    std::this_thread::sleep_for(20ms);
    g.stop();
    auto idle_phase = g.read();
    const CounterValue* idle = find(idle_phase, "task-clock");
    ASSERT_TRUE(idle && idle->value);
    EXPECT_LT(*idle->value, *tc->value);
}

TEST(PerfCounters, CountsAnotherThread) {
    // The runner opens counters on the vCPU thread from wherever it likes: count a thread by its tid.
    std::atomic<pid_t> tid{0};
    std::atomic<bool> go{false}, done{false};
    std::atomic<double> cpu{0};
    std::thread worker([&] {
        tid = pid_t(syscall(SYS_gettid));
        while (!go) std::this_thread::yield();
        cpu = busy_for(40ms);
        done = true;
    });
    while (tid == 0) std::this_thread::yield();
    CounterGroup g = CounterGroup::open(tid, {"task-clock"}, Split::all);
    g.start();
    go = true;
    while (!done) std::this_thread::sleep_for(1ms);
    g.stop();
    worker.join();
    auto v = g.read();
    ASSERT_TRUE(v[0].value) << v[0].unavailable;
    EXPECT_GT(*v[0].value, 0.5 * cpu.load()) << "the worker's CPU time " << cpu.load() << " ns";
    EXPECT_LT(*v[0].value, 1.2 * cpu.load() + 5e6) << "the worker's CPU time " << cpu.load() << " ns";
    EXPECT_EQ(g.tid(), tid.load());
}

TEST(PerfCounters, HardwareCyclesAreUnavailableWithTheKernelsReason) {
    int err = raw_cycles_errno();
    CounterGroup g = CounterGroup::open(0, {"cycles", "instructions", "task-clock"}, Split::all);
    g.start();
    busy_for(10ms);
    g.stop();
    auto v = g.read();
    const CounterValue* cyc = find(v, "cycles");
    ASSERT_TRUE(cyc);
    if (err == 0) {
        // A host with a PMU: cycles must then be a real count.
        ASSERT_TRUE(cyc->value) << cyc->unavailable;
        EXPECT_GT(*cyc->value, 0);
        std::printf("[ host     ] cycles counted: %.0f (scaling %.2f)\n", *cyc->value, cyc->scaling);
        return;
    }
    EXPECT_FALSE(cyc->value) << "a counter that cannot be read must not be reported (as 0 or anything)";
    EXPECT_NE(cyc->unavailable.find(std::strerror(err)), std::string::npos)
        << "observed " << std::strerror(err) << ", reported: " << cyc->unavailable;
    EXPECT_NE(cyc->unavailable.find("("), std::string::npos) << "a fix in parentheses: " << cyc->unavailable;
    std::printf("[ host     ] cycles: %s\n", cyc->unavailable.c_str());
    // The software event in the same request is unaffected.
    const CounterValue* tc = find(v, "task-clock");
    ASSERT_TRUE(tc && tc->value) << (tc ? tc->unavailable : "missing");
    EXPECT_TRUE(g.any_available());
}

TEST(PerfCounters, GuestOnlySoftwareEventsSayTheyAreNotSplit) {
    CounterGroup g = CounterGroup::open(0, {"task-clock"}, Split::guest_only);
    g.start();
    busy_for(5ms);
    g.stop();
    auto v = g.read();
    ASSERT_TRUE(v[0].value) << v[0].unavailable;
    EXPECT_NE(v[0].source.find("not split"), std::string::npos) << v[0].source;
    EXPECT_EQ(g.split(), Split::guest_only);
}

TEST(PerfCounters, CountableEventsAreWhatOpens) {
    auto ev = countable_events(200);
    EXPECT_LE(ev.size(), 200u);
    EXPECT_NE(std::find(ev.begin(), ev.end(), "task-clock"), ev.end());
    bool has_cycles = std::find(ev.begin(), ev.end(), "cycles") != ev.end();
    EXPECT_EQ(has_cycles, raw_cycles_errno() == 0);
    EXPECT_LE(countable_events(2).size(), 2u);
    std::string list;
    for (const auto& e : ev) list += e + " ";
    std::printf("[ countable] %s\n", list.c_str());
}

// ---- Intel PCM sidecar -----------------------------------------------------------------------------

TEST(PcmSidecar, ParsesPcmMemoryCsv) {
    // Shaped like pcm-memory -csv -nc (pcm-memory.cpp display_bandwidth_csv): label row, name row, data.
    const char* csv =
        ",,SKT0,SKT0,SKT0,SKT0,SKT1,SKT1,SKT1,SKT1,System,System,System\n"
        "Date,Time,Mem Read (MB/s),Mem Write (MB/s),P. Write (T/s),Memory (MB/s),Mem Read (MB/s),"
        "Mem Write (MB/s),P. Write (T/s),Memory (MB/s),Read,Write,Memory\n"
        "2024-05-01,10:00:00.100,  100.00,   50.00,     123,  150.00,  200.00,  100.00,   0,  300.00,    300.00,    "
        "150.00,    450.00\n"
        "2024-05-01,10:00:00.200,  300.00,  150.00,     123,  450.00,  400.00,  300.00,   0,  700.00,    700.00,    "
        "450.00,   1150.00\n";
    auto j = parse_pcm_memory_csv(csv);
    EXPECT_EQ(j["samples"], 2);
    EXPECT_DOUBLE_EQ(j["read_mbps"]["mean"].get<double>(), 500.0);
    EXPECT_DOUBLE_EQ(j["read_mbps"]["max"].get<double>(), 700.0);
    EXPECT_DOUBLE_EQ(j["write_mbps"]["mean"].get<double>(), 300.0);
    EXPECT_DOUBLE_EQ(j["memory_mbps"]["max"].get<double>(), 1150.0);

    EXPECT_EQ(parse_pcm_memory_csv("")["samples"], 0);
    EXPECT_FALSE(parse_pcm_memory_csv("")["read_mbps"].is_object());
    EXPECT_EQ(parse_pcm_memory_csv("garbage,,\n1,2,3\n")["samples"], 0);
}

TEST(PcmSidecar, TakesTheReasonFromPcmsOwnWords) {
    // pcm-memory 202302 in a VM without a vPMU, as captured on the build machine.
    const char* out =
        "\n Intel(r) Performance Counter Monitor: Memory Bandwidth Monitoring Utility  (202302-1)\n\n"
        "PCM Info: setrlimit for file limit 1000000 failed with error Operation not permitted\n"
        "Detected a hypervisor/virtualization technology. Some metrics might not be available due to "
        "configuration or availability of virtual hardware features.\n"
        "=====  Processor information  =====\nLinux arch_perfmon flag  : no\n"
        "ERROR: vPMU is not enabled in the hypervisor. Please see details in https://software.intel.com/x\n"
        "       you can force-continue by setting PCM_IGNORE_ARCH_PERFMON=1 environment variable.\n"
        "Detected Intel(R) Xeon(R) Processor \"Intel(r) microarchitecture codename Rocket Lake\" stepping 1\n"
        "Unsupported processor model (167).\n";
    std::string why = pcm_failure_reason(out);
    EXPECT_NE(why.find("vPMU is not enabled"), std::string::npos) << why;
    EXPECT_NE(why.find("Unsupported processor model (167)"), std::string::npos) << why;
    EXPECT_EQ(why.find("setrlimit"), std::string::npos) << why;
    EXPECT_NE(pcm_failure_reason("Only Intel processors are supported\n").find("Only Intel"), std::string::npos);
    EXPECT_EQ(pcm_failure_reason("all good\n"), "");
}

TEST(PcmSidecar, ThisHostEitherMeasuresOrSaysWhy) {
    PcmSidecar p = PcmSidecar::start(0.1);
    std::this_thread::sleep_for(1500ms);
    auto j = p.stop();
    std::printf("[ pcm      ] %s\n", j.dump().c_str());
    EXPECT_EQ(j["source"], "pcm-memory");
    if (j.contains("unavailable")) {
        std::string why = j["unavailable"];
        EXPECT_FALSE(why.empty());
        EXPECT_FALSE(j.contains("read_mbps")) << "no numbers next to an unavailable reason";
        if (access("/usr/sbin/pcm-memory", X_OK) != 0 && why.find("not found") == std::string::npos)
            ADD_FAILURE() << "pcm-memory is not installed, the reason should say so: " << why;
    } else {
        EXPECT_GT(j["samples"].get<int>(), 0);
        EXPECT_TRUE(j["read_mbps"].is_object());
    }
    // Stopped once: a second stop() reports, never re-runs or crashes.
    EXPECT_TRUE(p.stop().contains("unavailable"));
}

}  // namespace
}  // namespace fb
