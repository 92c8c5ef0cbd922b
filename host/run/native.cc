#include "host/run/native.h"

#include "host/vmm/vm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/config.h"
#include "common/patterns.h"
#include "common/x86/cpu.h"
#include "host/env/probe.h"
#include "host/results/results.h"
#include "host/run/runner.h"
#include "host/results/statistics.h"

extern char** environ;

namespace fb {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Context values are strings (AddCustomContext); accept numbers too.
uint64_t context_u64(const json& ctx, const char* key) {
    if (!ctx.contains(key)) return 0;
    const json& v = ctx[key];
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    uint64_t out = 0;
    if (v.is_string() && parse_u64(Str(v.get_ref<const std::string&>().c_str()), out)) return out;
    return 0;
}

CellStatus status_for_error(const std::string& msg, std::string& reason) {
    reason = msg;
    if (starts_with(msg, kSkippedPrefix)) {
        reason = msg.substr(std::strlen(kSkippedPrefix));
        return CellStatus::skipped;
    }
    if (starts_with(msg, kNeedsRing0) || starts_with(msg, kCpuLacksPrefix) ||
        starts_with(msg, kLlcUnknown))
        return CellStatus::unsupported;
    return CellStatus::fault;
}

uint64_t calibrated_tsc_khz() {
    auto now_ns = [] {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
        return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    };
    uint64_t n0 = now_ns(), t0 = x86::tsc_begin();
    timespec nap{0, 100'000'000};
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR) {
    }
    uint64_t n1 = now_ns(), t1 = x86::tsc_begin();
    return n1 > n0 ? (t1 - t0) * 1000000ull / (n1 - n0) : 0;
}

std::string last_line(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    size_t nl = text.rfind('\n');
    return nl == std::string::npos ? text : text.substr(nl + 1);
}

}  // namespace

std::string native_refusal_ring0(const char* pattern, const char* what) {
    return fmt::format("{} ({}: {}); boot the microkernel bare metal with `flushbench image`", kNeedsRing0, pattern, what);
}

json parse_gbench_json(const std::string& text) {
    std::string clean;
    clean.reserve(text.size());
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (in_string) {
            clean.push_back(c);
            if (c == '\\' && i + 1 < text.size()) clean.push_back(text[++i]);
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        bool replaced = false;
        for (std::string_view token : {"-Infinity", "Infinity", "-NaN", "NaN"})
            if (text.compare(i, token.size(), token) == 0) {
                clean += "null";
                i += token.size() - 1;
                replaced = true;
                break;
            }
        if (!replaced) clean.push_back(c);
    }
    json doc = json::parse(clean, nullptr, false);
    if (doc.is_discarded()) throw std::runtime_error("flushbench-native output is not JSON (run it with --benchmark_format=json)");
    return doc;
}

std::string native_benchmark_name(const std::string& pattern, uint64_t footprint_bytes) {
    return fmt::format("{}/{}/{}/{}", pattern, footprint_bytes, kNativeBackend, kNativeMode);
}

NativeResults parse_native_json(const std::string& text, const std::string& samples_text) {
    json doc = parse_gbench_json(text);
    if (!doc.is_object() || !doc.contains("benchmarks") || !doc["benchmarks"].is_array())
        throw std::runtime_error("flushbench-native output has no \"benchmarks\" array: not Google Benchmark JSON");
    NativeResults out;
    out.context = doc.value("context", json::object());
    uint64_t tsc_khz = context_u64(out.context, "tsc_khz");
    uint64_t line = context_u64(out.context, "line_bytes");
    uint64_t bracket = context_u64(out.context, "overhead_cycles");

    // The samples file: the calibration, then one line per measured cell (bench/native_bench.cc).
    std::map<std::string, json> samples;
    double floor = std::numeric_limits<double>::quiet_NaN();
    size_t lineno = 0;
    for (size_t from = 0; from < samples_text.size();) {
        size_t nl = std::min(samples_text.find('\n', from), samples_text.size());
        std::string l = samples_text.substr(from, nl - from);
        from = nl + 1, ++lineno;
        if (l.empty()) continue;
        json j = json::parse(l, nullptr, false);
        if (j.is_discarded() || !j.is_object()) throw std::runtime_error(fmt::format("flushbench-native samples line {} is not JSON", lineno));
        if (j.contains("calibration")) {
            const json& c = j["calibration"];
            floor = timing_floor(estimates(c.value("tsc", std::vector<uint64_t>{}), c.value("ref", std::vector<uint64_t>{}), c.value("k", 1u)));
            out.context["calibration"] = {{"k", c.value("k", 0u)}, {"n", c.value("tsc", json::array()).size()},
                                          {"floor_cycles", std::isfinite(floor) ? json(floor) : json(nullptr)}};
        } else if (j.contains("name") && j["name"].is_string()) {
            samples[j["name"].get<std::string>()] = j;
        } else {
            throw std::runtime_error(fmt::format("flushbench-native samples line {} names no cell", lineno));
        }
    }

    std::map<std::string, size_t> index;
    for (const json& e : doc["benchmarks"]) {
        if (!e.is_object() || !e.contains("name") || !e["name"].is_string())
            throw std::runtime_error("a benchmarks entry without a name: not Google Benchmark JSON");
        std::string name = e["name"].get<std::string>();
        if (e.value("run_type", "iteration") == "aggregate") continue;
        // "<pattern>/<footprint>/native/native", tolerating Google Benchmark's own suffixes after it.
        std::vector<std::string> parts;
        for (size_t from = 0;;) {
            size_t slash = name.find('/', from);
            parts.push_back(name.substr(from, slash - from));
            if (slash == std::string::npos) break;
            from = slash + 1;
        }
        uint64_t footprint = 0;
        if (parts.size() < 4 || parts[2] != kNativeBackend || parts[3] != kNativeMode ||
            !parse_u64(Str(parts[1].c_str()), footprint))
            throw std::runtime_error(fmt::format("benchmark '{}' is not named <pattern>/<footprint_bytes>/native/native: not flushbench-native output", name));
        const Pattern* p = find_pattern(Str(parts[0].c_str()));
        if (!p) throw std::runtime_error(fmt::format("benchmark '{}' names a pattern the table does not have (a different flushbench build?)", name));

        std::string key = native_benchmark_name(parts[0], footprint);
        if (!index.emplace(key, out.cells.size()).second) throw std::runtime_error(fmt::format("benchmark '{}' reported twice", key));
        Cell c;
        c.pattern = p->name;
        c.footprint_bytes = footprint;
        c.backend = kNativeBackend;
        c.mode = kNativeMode;
        c.unit = unit_name(p->unit);
        c.tsc_khz = tsc_khz;
        c.tsc_overhead = bracket;
        c.floor_cycles = floor;
        if (line && line <= 4096) c.line_bytes = uint32_t(line);
        if (e.value("error_occurred", false)) {
            c.status = status_for_error(e.value("error_message", std::string("error without a message")), c.reason);
            out.cells.push_back(std::move(c));
            continue;
        }
        auto it = samples.find(key);
        if (it == samples.end()) throw std::runtime_error(fmt::format("{}: no samples (run flushbench-native with --samples FILE)", key));
        const json& sm = it->second;
        c.method = sm.value("method", "");
        c.batch = sm.value("k", 1u);
        c.ops = sm.value("ops", uint64_t{0});
        c.stop = sm.value("stop", "");
        c.tsc = sm.value("tsc", std::vector<uint64_t>{});
        c.ref = sm.value("ref", std::vector<uint64_t>{});
        if ((c.method != "batch" && c.method != "paired") || c.tsc.empty() || c.ref.size() != c.tsc.size() || c.batch < 1)
            throw std::runtime_error(fmt::format("{}: malformed samples (method, k, tsc, ref)", key));
        // The host counters are per operation, from the counting pass: not per repetition.
        for (const auto& [k, v] : e.items())
            if (starts_with(k, "perf_") && v.is_number()) c.extra["perf_per_op"][k.substr(5)] = v;
        std::string label = e.value("label", "");
        c.guest_pmu_unavailable = starts_with(label, "counters unavailable: ")
                                      ? label.substr(22)
                                      : "native: host counters are per operation (extra.perf_per_op), not per repetition";
        out.cells.push_back(std::move(c));
    }
    return out;
}

std::vector<Cell> native_cells(const std::string& gbench_json_text, const std::string& samples_text) {
    return parse_native_json(gbench_json_text, samples_text).cells;
}

TscRate native_tsc_rate() {
    x86::TscFreq f = x86::tsc_frequency();
    // The hypervisor's timing leaf and the crystal ratio are exact; 0x16 is a nominal MHz figure.
    if (f.khz && std::strcmp(f.source, "cpuid-0x16") != 0) return {f.khz, f.source};
    if (uint64_t khz = kvm_default_tsc_khz()) return {khz, "KVM_GET_TSC_KHZ on a scratch vCPU (the kernel's calibrated tsc_khz)"};
    if (f.khz) return {f.khz, "cpuid-0x16 (nominal base frequency)"};
    return {calibrated_tsc_khz(), "calibrated: TSC against CLOCK_MONOTONIC_RAW over 100 ms"};
}

std::string default_native_binary() {
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        fs::path p = self.parent_path() / "flushbench-native";
        if (fs::exists(p)) return p.string();
    }
    return std::string(FLUSHBENCH_BUILD_DIR) + "/bin/flushbench-native";
}

std::vector<std::string> native_argv(const NativeOptions& o) {
    std::vector<std::string> a = {o.binary.empty() ? default_native_binary() : o.binary, "--benchmark_format=json",
                                  "--patterns", o.patterns, "--footprints", o.footprints, "--warmup", std::to_string(o.warmup),
                                  "--reps", std::to_string(o.reps), "--min-reps", std::to_string(o.min_reps),
                                  "--target-permille", std::to_string(o.target_permille), "--budget-ms", std::to_string(o.budget_ms)};
    if (!o.samples.empty()) a.insert(a.end(), {"--samples", o.samples});
    if (!o.skip.empty()) a.insert(a.end(), {"--skip", o.skip});
    if (o.cpu >= 0) a.insert(a.end(), {"--cpu", std::to_string(o.cpu)});
    a.insert(a.end(), o.extra_args.begin(), o.extra_args.end());
    return a;
}

NativeResults run_native_bench(const NativeOptions& options) {
    NativeOptions o = options;
    // The raw brackets come back through a file of their own; Google Benchmark's JSON on stdout.
    char tmpl[] = "/tmp/flushbench-native-samples-XXXXXX";
    int sfd = mkstemp(tmpl);
    if (sfd < 0) throw std::runtime_error(fmt::format("cannot create a samples file in /tmp: {}", strerror(errno)));
    ::close(sfd);
    struct Unlink {
        std::string path;
        ~Unlink() { ::unlink(path.c_str()); }
    } cleanup{tmpl};
    o.samples = tmpl;
    auto argv = native_argv(o);
    if (::access(argv[0].c_str(), X_OK) != 0)
        throw std::runtime_error(fmt::format("{} not found: build it with `cmake --build build --target flushbench-native`", argv[0]));
    int out_pipe[2], err_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)) throw std::runtime_error(fmt::format("pipe: {}", strerror(errno)));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
    std::vector<char*> cargv;
    for (auto& s : argv) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    if (rc != 0) {
        ::close(out_pipe[0]);
        ::close(err_pipe[0]);
        throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], strerror(rc)));
    }
    std::string out, err;
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    char buf[65536];
    for (int open_fds = 2; open_fds > 0;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
                continue;
            }
            if (i == 0) out.append(buf, size_t(n));
            else {
                if (o.echo_stderr) (void)!::write(2, buf, size_t(n));
                err.append(buf, size_t(n));
                if (err.size() > 65536) err.erase(0, err.size() - 65536);
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status))
        throw std::runtime_error(fmt::format("{} killed by signal {} ({})", argv[0], WTERMSIG(status), strsignal(WTERMSIG(status))));
    if (WEXITSTATUS(status) != 0)
        throw std::runtime_error(fmt::format("{} exited with status {}: {}", argv[0], WEXITSTATUS(status), err.empty() ? "no message" : last_line(err)));
    std::ifstream in(o.samples);
    std::string samples((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return parse_native_json(out, samples);
}


}  // namespace fb
