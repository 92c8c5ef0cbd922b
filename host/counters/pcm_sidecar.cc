#include "host/counters/pcm_sidecar.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "host/env/cpuinfo.h"

extern char** environ;

namespace fb {
namespace {

namespace fs = std::filesystem;

std::string find_pcm_memory() {
    std::vector<std::string> dirs;
    if (const char* path = std::getenv("PATH")) {
        std::stringstream ss(path);
        for (std::string d; std::getline(ss, d, ':');)
            if (!d.empty()) dirs.push_back(d);
    }
    // Debian installs PCM into /usr/sbin, which a non-root PATH lacks.
    dirs.insert(dirs.end(), {"/usr/sbin", "/usr/local/sbin"});
    for (const auto& d : dirs) {
        std::string p = d + "/pcm-memory";
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    return {};
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string cpu_vendor() {
    CpuInfo ci = read_cpuinfo();
    auto it = ci.find("vendor_id");
    return it != ci.end() ? it->second : "unknown";
}

// What this host lacks by PCM's known requirements; said next to PCM's own message.
std::string host_notes() {
    std::vector<std::string> notes;
    std::string vendor = cpu_vendor();
    if (vendor != "GenuineIntel") notes.push_back("CPU vendor " + vendor + ", PCM supports Intel only");
    if (::access("/dev/cpu/0/msr", F_OK) != 0) notes.push_back("/dev/cpu/0/msr missing (modprobe msr)");
    if (::geteuid() != 0) notes.push_back("not root");
    std::string s;
    for (const auto& n : notes) s += (s.empty() ? "" : "; ") + n;
    return s;
}

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(std::string_view s) {
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string_view::npos ? std::string() : std::string(s.substr(b, e - b + 1));
}

std::vector<std::string> split_csv(const std::string& line) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) out.push_back(trim(cell));
    if (!line.empty() && line.back() == ',') out.push_back("");
    return out;
}

}  // namespace

std::string pcm_failure_reason(std::string_view output) {
    static const char* const kSignals[] = {"error",   "unsupported", "not supported", "only intel", "cannot",
                                           "can not", "denied",      "not enabled",   "no such"};
    std::string out;
    std::istringstream in{std::string(output)};
    for (std::string line; std::getline(in, line);) {
        std::string t = trim(line);
        std::string l = lower(t);
        if (t.empty() || l.rfind("pcm info", 0) == 0) continue;  // e.g. a harmless setrlimit note
        bool hit = std::any_of(std::begin(kSignals), std::end(kSignals),
                               [&](const char* s) { return l.find(s) != std::string::npos; });
        if (!hit) continue;
        if (t.size() > 200) t = t.substr(0, 200) + "...";
        out += (out.empty() ? "" : "; ") + t;
    }
    return out;
}

nlohmann::json parse_pcm_memory_csv(std::string_view csv) {
    std::vector<std::vector<std::string>> rows;
    std::istringstream in{std::string(csv)};
    for (std::string line; std::getline(in, line);)
        if (!trim(line).empty()) rows.push_back(split_csv(trim(line)));

    // The label row holds "System" over the system-wide columns; the next row names them.
    int read_col = -1, write_col = -1, mem_col = -1;
    size_t first_data = rows.size();
    for (size_t r = 0; r + 1 < rows.size(); ++r) {
        const auto& top = rows[r];
        const auto& names = rows[r + 1];
        for (size_t c = 0; c < top.size() && c < names.size(); ++c) {
            if (top[c] != "System") continue;
            if (names[c] == "Read")
                read_col = int(c);
            else if (names[c] == "Write")
                write_col = int(c);
            else if (names[c] == "Memory")
                mem_col = int(c);
        }
        if (read_col >= 0 || write_col >= 0 || mem_col >= 0) {
            first_data = r + 2;
            break;
        }
    }
    struct Stat {
        double sum = 0, max = 0;
        size_t n = 0;
    } rd, wr, mem;
    auto take = [](const std::vector<std::string>& row, int col, Stat& s) {
        if (col < 0 || size_t(col) >= row.size() || row[size_t(col)].empty()) return false;
        char* end = nullptr;
        double v = std::strtod(row[size_t(col)].c_str(), &end);
        if (end == row[size_t(col)].c_str() || *end != '\0') return false;
        s.sum += v;
        s.max = s.n ? std::max(s.max, v) : v;
        ++s.n;
        return true;
    };
    size_t samples = 0;
    for (size_t r = first_data; r < rows.size(); ++r) {
        bool any = take(rows[r], read_col, rd);
        any = take(rows[r], write_col, wr) || any;
        any = take(rows[r], mem_col, mem) || any;
        if (any) ++samples;
    }
    nlohmann::json j = {{"samples", samples}};
    auto put = [&](const char* key, const Stat& s) {
        if (s.n) j[key] = {{"mean", s.sum / double(s.n)}, {"max", s.max}};
    };
    put("read_mbps", rd);
    put("write_mbps", wr);
    put("memory_mbps", mem);
    return j;
}

PcmSidecar PcmSidecar::start(double interval_s) {
    PcmSidecar p;
    p.interval_s_ = interval_s;
    p.host_notes_ = host_notes();
    p.started_ = std::chrono::steady_clock::now();
    std::string bin = find_pcm_memory();
    if (bin.empty()) {
        p.unavailable_ = "pcm-memory not found on PATH or in /usr/sbin (apt-get install pcm)";
        if (!p.host_notes_.empty()) p.unavailable_ += "; " + p.host_notes_;
        return p;
    }
    char tmpl[] = "/tmp/flushbench-pcm-XXXXXX";
    if (!::mkdtemp(tmpl)) {
        p.unavailable_ = fmt::format("mkdtemp: {}", std::strerror(errno));
        return p;
    }
    p.dir_ = tmpl;
    std::string csv = p.dir_ + "/pcm.csv", log = p.dir_ + "/pcm.log";

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);  // PCM may ask "reset PMU? (y/n)"
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<std::string> args = {bin, fmt::format("{}", interval_s), "-csv=" + csv, "-nc"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        p.unavailable_ = fmt::format("posix_spawn {}: {}", bin, std::strerror(rc));
        p.cleanup();
        return p;
    }
    p.pid_ = pid;
    return p;
}

nlohmann::json PcmSidecar::stop() {
    nlohmann::json j = {{"source", "pcm-memory"}};
    if (pid_ < 0) {
        j["unavailable"] = unavailable_.empty() ? "pcm-memory was not started" : unavailable_;
        return j;
    }
    double duration = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    bool exited_early = r == pid_;
    if (!exited_early) {
        // SIGINT: PCM's handler restores the uncore PMU configuration before it exits.
        ::kill(pid_, SIGINT);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while ((r = ::waitpid(pid_, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (r == 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &status, 0);
        }
    }
    pid_ = -1;
    std::string log = read_file(dir_ + "/pcm.log");
    nlohmann::json bw = parse_pcm_memory_csv(read_file(dir_ + "/pcm.csv"));
    cleanup();

    if (exited_early || bw["samples"].get<size_t>() == 0) {
        std::string why = pcm_failure_reason(log);
        std::string status_text = WIFEXITED(status)     ? fmt::format("exit status {}", WEXITSTATUS(status))
                                  : WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                                        : "stopped";
        if (why.empty())
            why = exited_early ? fmt::format("pcm-memory ended before the phase did ({})", status_text)
                               : fmt::format(
                                     "pcm-memory wrote no sample in {:.2f} s (interval {} s; it needs about a "
                                     "second to start)",
                                     duration, interval_s_);
        else
            why = fmt::format("pcm-memory: {} ({})", why, status_text);
        if (!host_notes_.empty()) why += "; host: " + host_notes_;
        unavailable_ = why;
        j["unavailable"] = why;
        return j;
    }
    j["interval_s"] = interval_s_;
    j["duration_s"] = duration;
    for (auto& [k, v] : bw.items()) j[k] = v;
    unavailable_ = "pcm-memory already stopped";
    return j;
}

void PcmSidecar::cleanup() {
    if (dir_.empty()) return;
    std::error_code ec;
    fs::remove_all(dir_, ec);
    dir_.clear();
}

PcmSidecar::PcmSidecar(PcmSidecar&& o) noexcept
    : pid_(o.pid_),
      interval_s_(o.interval_s_),
      dir_(std::move(o.dir_)),
      unavailable_(std::move(o.unavailable_)),
      host_notes_(std::move(o.host_notes_)),
      started_(o.started_) {
    o.pid_ = -1;
    o.dir_.clear();
}

PcmSidecar& PcmSidecar::operator=(PcmSidecar&& o) noexcept {
    if (this != &o) {
        if (pid_ >= 0) stop();
        cleanup();
        pid_ = o.pid_;
        interval_s_ = o.interval_s_;
        dir_ = std::move(o.dir_);
        unavailable_ = std::move(o.unavailable_);
        host_notes_ = std::move(o.host_notes_);
        started_ = o.started_;
        o.pid_ = -1;
        o.dir_.clear();
    }
    return *this;
}

PcmSidecar::~PcmSidecar() {
    if (pid_ >= 0) stop();
    cleanup();
}

}  // namespace fb
