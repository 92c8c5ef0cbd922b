// KVM exit attribution from the kvm:kvm_exit tracepoint (kvm_trace.h): tracefs format parsing, the
// per-thread perf ring and the exit-reason names for VMX and SVM. Just over 500 lines, one concept.
#include "host/counters/kvm_trace.h"

#include <linux/magic.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "host/env/probe.h"  // kvm_flavour
#include "host/sys/cpus.h"
#include "host/sys/fd.h"
#include "host/sys/perf_event.h"
#include "host/sys/clock.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

constexpr const char* kExit = "kvm:kvm_exit";
constexpr const char* kEntry = "kvm:kvm_entry";
// Fired by KVM's common x86 code, so they work where the vendor module never calls trace_kvm_exit.
constexpr const char* kFallback[] = {"kvm:kvm_emulate_insn", "kvm:kvm_pio", "kvm:kvm_userspace_exit"};
constexpr const char* kFallbackSource = "kvm:kvm_emulate_insn+kvm:kvm_pio+kvm:kvm_userspace_exit";


bool is_dir(const fs::path& p) {
    std::error_code ec;
    return fs::is_directory(p, ec);
}

std::string open_fix(int err) {
    switch (err) {
        case EACCES:
        case EPERM:
            return "tracepoint sampling needs root or CAP_PERFMON (and readable tracefs format files)";
        case ENOENT:
            return "the tracepoint ID is unknown to perf: kernel without CONFIG_PERF_EVENTS tracepoint support?";
        case ESRCH:
            return "the thread does not exist (any more)";
        case EMFILE:
            return "too many open files: raise ulimit -n";
        default:
            return "see perf_event_open(2)";
    }
}

// Opens one tracepoint event for `tid` into tp, or records why it could not be opened.
template <typename Tracepoint>
void open_into(Tracepoint& tp, perf_event_attr& a, pid_t tid) {
    int fd = perf_event_open(&a, tid, -1, -1);
    if (fd < 0) {
        int e = errno;
        tp.unavailable = fmt::format("perf_event_open: {} ({})", std::strerror(e), open_fix(e));
    } else {
        tp.fd = UniqueFd(fd);
    }
}

}  // namespace

TracefsLocation locate_tracefs(bool may_mount) {
    TracefsLocation loc;
    for (const char* root : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
        struct statfs st {};
        if (::statfs(root, &st) != 0 || st.f_type != TRACEFS_MAGIC) continue;
        if (::access((fs::path(root) / "events").c_str(), R_OK | X_OK) != 0) {
            loc.unavailable = fmt::format("tracefs at {} is not readable by uid {} ({}): run as root", root,
                                          ::geteuid(), std::strerror(errno));
            return loc;
        }
        loc.root = root;
        return loc;
    }
    if (!may_mount || ::geteuid() != 0) {
        loc.unavailable =
            "tracefs is not mounted at /sys/kernel/tracing and only root may mount it: "
            "mount -t tracefs nodev /sys/kernel/tracing";
        return loc;
    }
    if (::mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0) {
        loc.unavailable = fmt::format(
            "mount -t tracefs nodev /sys/kernel/tracing failed: {} (a kernel without "
            "CONFIG_TRACING, or a container without CAP_SYS_ADMIN)",
            std::strerror(errno));
        return loc;
    }
    loc.root = "/sys/kernel/tracing";
    loc.mounted_by_us = true;  // left mounted: other tools (and the next cell) use it too
    return loc;
}

// ---- Decoder --------------------------------------------------------------------------------------

void KvmExitTrace::Decoder::reset() {
    by_reason.clear();
    pending.reset();
    exits = entries = undecodable = 0;
}

void KvmExitTrace::Decoder::on_sample(uint64_t time_ns, std::span<const uint8_t> raw) {
    const TracepointFormat* any = exit_fmt ? exit_fmt : entry_fmt;
    const TracepointFormat::Field* type_field = any ? any->field("common_type") : nullptr;
    auto type = type_field ? extract(*type_field, raw) : std::nullopt;
    if (!type) {
        ++undecodable;
        return;
    }
    if (exit_fmt && *type == exit_fmt->id) {
        const auto* reason_f = exit_fmt->field(reason_field);
        const auto* isa_f = exit_fmt->field("isa");
        auto reason = reason_f ? extract(*reason_f, raw) : std::nullopt;
        if (!reason) {
            ++undecodable;
            return;
        }
        Isa isa = fallback_isa;
        if (isa_f)
            if (auto v = extract(*isa_f, raw)) isa = isa_from_tracepoint(*v);
        ++exits;
        if (pending) ++by_reason[pending->second].count;  // its entry was lost: counted, not timed
        pending = std::make_pair(time_ns, exit_reason_name(isa, *reason));
        auto& r = by_reason[pending->second];
        r.isa = isa, r.code = *reason;
    } else if (entry_fmt && *type == entry_fmt->id) {
        ++entries;
        if (!pending) return;  // the entry that resumed the vCPU after start()
        auto& r = by_reason[pending->second];
        ++r.count;
        if (time_ns >= pending->first) {
            ++r.timed;
            r.total_ns += time_ns - pending->first;
        }
        pending.reset();
    } else {
        ++undecodable;
    }
}

void KvmExitTrace::Decoder::finish() {
    // The exit that handed the vCPU to the VMM for the phase's last record is still open: its time
    // to the next entry would include the VMM's bookkeeping, not KVM's work.
    if (pending) ++by_reason[pending->second].count;
    pending.reset();
}

// ---- State ----------------------------------------------------------------------------------------

struct KvmExitTrace::State {
    struct Tracepoint {
        std::string event;  // "kvm:kvm_pio"
        UniqueFd fd;
        std::string unavailable;
        std::optional<uint64_t> count;  // of the last phase
    };

    pid_t tid = 0;
    std::string unavailable;
    std::string flavour;
    TracefsLocation tracefs;
    std::unique_ptr<TracepointFormat> exit_fmt, entry_fmt;
    std::vector<Tracepoint> tps;  // kvm_exit, kvm_entry, then kFallback
    Mapping ring;                 // kvm_exit's ring buffer; kvm_entry's samples are redirected into it
    size_t page = 4096, data_bytes = 0;
    std::vector<uint8_t> scratch;

    std::mutex lock;  // decoder, lost, the ring's tail: the reader drains while a phase runs
    Decoder decoder;
    uint64_t lost = 0;
    uint64_t started_ns = 0, duration_ns = 0;
    bool ran = false;

    UniqueFd wake;  // eventfd that ends the reader
    std::thread reader;
    std::atomic<bool> quit{false};

    ~State() {
        quit.store(true);
        if (wake) {
            uint64_t one = 1;
            [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof one);
        }
        if (reader.joinable()) reader.join();
    }

    Tracepoint* find(std::string_view event) {
        for (auto& t : tps)
            if (t.event == event) return &t;
        return nullptr;
    }

    // Copies `n` bytes at ring offset `off`, which may wrap around the end of the data area.
    void copy_from_ring(uint64_t off, void* dst, size_t n) const {
        const uint8_t* data = static_cast<const uint8_t*>(ring.get()) + page;
        size_t at = size_t(off % data_bytes), first = std::min(n, data_bytes - at);
        std::memcpy(dst, data + at, first);
        if (first < n) std::memcpy(static_cast<uint8_t*>(dst) + first, data, n - first);
    }

    void drain() {  // caller holds lock
        if (!ring.get()) return;
        auto* meta = static_cast<perf_event_mmap_page*>(ring.get());
        uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
        uint64_t tail = meta->data_tail;
        while (tail + sizeof(perf_event_header) <= head) {
            perf_event_header h;
            copy_from_ring(tail, &h, sizeof h);
            if (h.size < sizeof h || tail + h.size > head) break;
            scratch.resize(h.size);
            copy_from_ring(tail, scratch.data(), h.size);
            const uint8_t* p = scratch.data() + sizeof h;
            size_t left = h.size - sizeof h;
            if (h.type == PERF_RECORD_SAMPLE && left >= 20) {
                // sample_type TID | TIME | RAW: { u32 pid, tid; u64 time; u32 size; u8 data[size]; }
                uint64_t time = 0;
                uint32_t raw_size = 0;
                std::memcpy(&time, p + 8, 8);
                std::memcpy(&raw_size, p + 16, 4);
                if (raw_size <= left - 20)
                    decoder.on_sample(time, {p + 20, raw_size});
                else
                    ++decoder.undecodable;
            } else if (h.type == PERF_RECORD_LOST && left >= 16) {
                uint64_t n = 0;
                std::memcpy(&n, p + 8, 8);  // { u64 id; u64 lost; }
                lost += n;
            }
            tail += h.size;
        }
        __atomic_store_n(&meta->data_tail, tail, __ATOMIC_RELEASE);
    }

    // Drains when the buffer passes its watermark, so a phase with more exits than the ring holds
    // loses nothing. Runs on the process's CPUs, not the (maybe pinned) vCPU thread's.
    void reader_loop() {
        unpin_current_thread();
        bool ring_alive = true;
        while (!quit.load()) {
            pollfd fds[2] = {{wake.get(), POLLIN, 0}, {tps[0].fd.get(), POLLIN, 0}};
            int n = ::poll(fds, ring_alive ? 2 : 1, -1);
            if (n < 0 && errno != EINTR) return;
            if (fds[0].revents) return;
            if (ring_alive && (fds[1].revents & (POLLHUP | POLLERR))) ring_alive = false;  // the thread exited
            if (ring_alive && (fds[1].revents & POLLIN)) {
                std::lock_guard<std::mutex> g(lock);
                drain();
            }
        }
    }
};

KvmExitTrace::KvmExitTrace(std::unique_ptr<State> state) : s_(std::move(state)) {}
KvmExitTrace::KvmExitTrace(KvmExitTrace&&) noexcept = default;
KvmExitTrace& KvmExitTrace::operator=(KvmExitTrace&&) noexcept = default;
KvmExitTrace::~KvmExitTrace() {
    if (s_) stop();
}

bool KvmExitTrace::available() const { return s_ && s_->unavailable.empty(); }

KvmExitTrace KvmExitTrace::open(pid_t tid) { return open(tid, kExit, kEntry, "exit_reason"); }

KvmExitTrace KvmExitTrace::open(pid_t tid, const std::string& exit_event, const std::string& entry_event,
                                const std::string& reason_field) {
    auto s = std::make_unique<State>();
    s->tid = tid;
    s->flavour = kvm_flavour();
    s->page = size_t(::sysconf(_SC_PAGESIZE));
    s->tracefs = locate_tracefs(true);
    if (!s->tracefs.unavailable.empty()) {
        s->unavailable = s->tracefs.unavailable;
        return KvmExitTrace(std::move(s));
    }
    fs::path events = fs::path(s->tracefs.root) / "events";
    if (!is_dir(events / "kvm")) {
        s->unavailable = fmt::format("{} has no kvm events: load the kvm module (modprobe kvm)", events.string());
        return KvmExitTrace(std::move(s));
    }

    auto load = [&](std::string_view e, std::string& why) -> std::unique_ptr<TracepointFormat> {
        if (e.find(':') == std::string_view::npos) {
            why = fmt::format("\"{}\" is not system:event", e);
            return nullptr;
        }
        fs::path path =
            events / std::string(e.substr(0, e.find(':'))) / std::string(e.substr(e.find(':') + 1)) / "format";
        try {
            return std::make_unique<TracepointFormat>(read_tracepoint_format(path.string()));
        } catch (const std::exception& ex) {
            why = ex.what();
            return nullptr;
        }
    };

    // kvm_exit and kvm_entry: sampled into one ring buffer, so their order on the thread is the order
    // in the buffer.
    for (const std::string& event : {exit_event, entry_event}) {
        State::Tracepoint tp{event, {}, {}, {}};
        auto fmt_ = load(event, tp.unavailable);
        if (fmt_) {
            perf_event_attr a{};
            a.size = sizeof a;
            a.type = PERF_TYPE_TRACEPOINT;
            a.config = fmt_->id;
            a.sample_period = 1;
            a.sample_type = PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_RAW;
            a.disabled = 1;
            a.watermark = 1;  // wake the reader at half a buffer (wakeup_watermark 0), not per sample
            open_into(tp, a, tid);
        }
        if (s->tps.empty())
            s->exit_fmt = std::move(fmt_);
        else
            s->entry_fmt = std::move(fmt_);
        s->tps.push_back(std::move(tp));
    }
    State::Tracepoint& exit_tp = s->tps[0];
    State::Tracepoint& entry_tp = s->tps[1];
    if (exit_tp.fd) {
        // 2 MiB holds ~20k kvm_exit samples; smaller when the mlock budget (perf_event_mlock_kb) is short.
        for (size_t pages : {512, 128, 32, 8}) {
            size_t bytes = (1 + pages) * s->page;
            void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, exit_tp.fd.get(), 0);
            if (p == MAP_FAILED) continue;
            s->ring = Mapping(p, bytes);
            s->data_bytes = pages * s->page;
            break;
        }
        if (!s->ring.get()) {
            exit_tp.unavailable = fmt::format(
                "mmap of the sample buffer: {} (raise perf_event_mlock_kb or run as root)", std::strerror(errno));
            exit_tp.fd = UniqueFd();
        }
    }
    if (entry_tp.fd && exit_tp.fd && ::ioctl(entry_tp.fd.get(), PERF_EVENT_IOC_SET_OUTPUT, exit_tp.fd.get()) != 0) {
        entry_tp.unavailable = fmt::format("PERF_EVENT_IOC_SET_OUTPUT: {}", std::strerror(errno));
        entry_tp.fd = UniqueFd();
    }
    if (!exit_tp.fd && entry_tp.fd) {
        entry_tp.unavailable = "not sampled: kvm:kvm_exit, whose buffer it shares, is unavailable";
        entry_tp.fd = UniqueFd();
    }

    // The fallback tracepoints only count.
    for (const char* event : kFallback) {
        State::Tracepoint tp{event, {}, {}, {}};
        if (auto f = load(event, tp.unavailable)) {
            perf_event_attr a{};
            a.size = sizeof a;
            a.type = PERF_TYPE_TRACEPOINT;
            a.config = f->id;
            a.disabled = 1;
            open_into(tp, a, tid);
        }
        s->tps.push_back(std::move(tp));
    }

    bool any = false;
    for (const auto& t : s->tps) any = any || bool(t.fd);
    if (!any) {
        s->unavailable = fmt::format("no KVM tracepoint could be opened on thread {}: {}", tid,
                                     s->tps[0].unavailable.empty() ? "?" : s->tps[0].unavailable);
        return KvmExitTrace(std::move(s));
    }

    s->decoder.exit_fmt = s->exit_fmt.get();
    s->decoder.entry_fmt = s->entry_fmt.get();
    s->decoder.fallback_isa = host_kvm_isa();
    s->decoder.reason_field = reason_field;
    if (s->ring.get()) {
        s->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC));
        if (s->wake) s->reader = std::thread([st = s.get()] { st->reader_loop(); });
    }
    return KvmExitTrace(std::move(s));
}

void KvmExitTrace::start() {
    if (!available()) return;
    State& s = *s_;
    std::lock_guard<std::mutex> g(s.lock);
    s.drain();  // samples of anything before this phase (nothing, unless stop() was skipped)
    s.decoder.reset();
    s.lost = 0;
    for (auto& t : s.tps) {
        t.count.reset();
        if (t.fd) ::ioctl(t.fd.get(), PERF_EVENT_IOC_RESET, 0);
    }
    s.ran = true;
    s.duration_ns = 0;
    s.started_ns = monotonic_ns();
    for (auto& t : s.tps)
        if (t.fd) ::ioctl(t.fd.get(), PERF_EVENT_IOC_ENABLE, 0);
}

void KvmExitTrace::stop() {
    if (!available()) return;
    State& s = *s_;
    for (auto& t : s.tps)
        if (t.fd) ::ioctl(t.fd.get(), PERF_EVENT_IOC_DISABLE, 0);
    std::lock_guard<std::mutex> g(s.lock);
    if (!s.ran || s.duration_ns != 0) return;  // stop() without start(), or twice
    s.duration_ns = monotonic_ns() - s.started_ns;
    for (auto& t : s.tps) {
        uint64_t v = 0;
        if (t.fd && ::read(t.fd.get(), &v, sizeof v) == ssize_t(sizeof v)) t.count = v;
    }
    s.drain();
    s.decoder.finish();
}

nlohmann::json KvmExitTrace::result() const {
    nlohmann::json j;
    if (!s_) return {{"unavailable", "moved-from KvmExitTrace"}};
    State& s = *s_;
    std::lock_guard<std::mutex> g(s.lock);
    j["tracefs"] = s.tracefs.root.empty()    ? "none"
                   : s.tracefs.mounted_by_us ? s.tracefs.root + " (mounted by flushbench)"
                                             : s.tracefs.root;
    if (!s.unavailable.empty()) {
        j["source"] = "none";
        j["unavailable"] = s.unavailable;
        return j;
    }
    if (!s.ran || s.duration_ns == 0) {
        j["source"] = "none";
        j["unavailable"] = "no phase measured: start() and stop() bracket one";
        return j;
    }
    j["duration_ns"] = s.duration_ns;
    nlohmann::json counts = nlohmann::json::object(), missing = nlohmann::json::object();
    for (const auto& t : s.tps) {
        if (t.count)
            counts[t.event] = *t.count;
        else
            missing[t.event] = t.unavailable.empty() ? "read of the counter failed" : t.unavailable;
    }
    j["counts"] = counts;
    if (!missing.empty()) j["unavailable_events"] = missing;

    const State::Tracepoint* exit_tp = &s.tps[0];
    bool exits_fired = exit_tp->count.value_or(0) > 0 || s.decoder.exits > 0;
    nlohmann::json by = nlohmann::json::object();
    if (exits_fired) {
        j["source"] = exit_tp->event;
        j["exits_sampled"] = s.decoder.exits;
        for (const auto& [name, r] : s.decoder.by_reason) {
            nlohmann::json e = {{"count", r.count}, {"timed", r.timed}, {"total_ns", r.total_ns},
                                {"isa", to_string(r.isa)}, {"code", fmt::format("{:#x}", r.code)}};
            e["mean_ns"] = r.timed ? nlohmann::json(double(r.total_ns) / double(r.timed)) : nlohmann::json(nullptr);
            by[name] = e;
        }
        // The kernel reports a full ring with PERF_RECORD_LOST only once space frees up, which a
        // stopped reader may never see: the exit counter says how many samples are really missing.
        uint64_t counted = exit_tp->count.value_or(0);
        uint64_t missing_samples = counted > s.decoder.exits ? counted - s.decoder.exits : 0;
        uint64_t lost = std::max<uint64_t>(s.lost, missing_samples);
        if (lost) j["lost_samples"] = lost;
        if (s.decoder.undecodable) j["undecodable_samples"] = s.decoder.undecodable;
        if (!s.tps[1].fd) j["note"] = s.tps[1].event + " unavailable: exits are counted but not timed";
    } else {
        bool any_fallback = false;
        for (const char* e : kFallback) any_fallback = any_fallback || counts.contains(e);
        if (!any_fallback) {
            j["source"] = "none";
            j["unavailable"] = fmt::format("{} {} and none of {} could be counted", exit_tp->event,
                                           exit_tp->count ? "did not fire" : "is unavailable", kFallbackSource);
            j["by_reason"] = by;
            return j;
        }
        j["source"] = kFallbackSource;
        j["note"] = exit_tp->count ? fmt::format(
                                         "{} did not fire on this thread during the phase (KVM module {} does "
                                         "not trace its exits); counted the emulation, port-I/O and userspace-exit "
                                         "tracepoints of KVM's common code instead: no per-reason times",
                                         exit_tp->event, s.flavour)
                                   : fmt::format(
                                         "{} unavailable ({}); counted the emulation, port-I/O and "
                                         "userspace-exit tracepoints instead: no per-reason times",
                                         exit_tp->event, exit_tp->unavailable);
    }
    j["by_reason"] = by;
    return j;
}

}  // namespace fb
