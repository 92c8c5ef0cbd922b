#include "host/run/runner.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "common/boot.h"
#include "common/cell_plan.h"
#include "common/config.h"
#include "common/x86/cpu.h"
#include "host/results/compare.h"
#include "host/vmm/elf_image.h"
#include "host/counters/kvm_trace.h"
#include "host/run/native.h"
#include "host/neighbour/neighbour.h"
#include "host/neighbour/neighbour_results.h"
#include "host/counters/kernel_probes.h"
#include "host/vmm/kvm_vfio_device.h"
#include "host/evidence/mode_evidence.h"
#include "host/counters/pcm_sidecar.h"
#include "host/counters/perf_counters.h"
#include "host/env/probe.h"
#include "host/qemu/qemu_guest.h"
#include "host/results/record_stream.h"
#include "host/env/regime.h"
#include "host/results/results.h"
#include "host/results/statistics.h"
#include "host/results/timing_check.h"
#include "host/vfio/vfio_attachment.h"
#include "host/vfio/vfio_sysfs.h"
#include "host/sys/kvm.h"
#include "host/vmm/vmm_guest.h"

namespace fb {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct EnvironmentError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// The kernel's evidence contradicts a phase's mode label: the run stops (exit 3).
struct ModeContradiction : EnvironmentError {
    using EnvironmentError::EnvironmentError;
};

// One open attachment per VFIO file for the whole process: a group opens once, and every run of a
// matrix, and every boot of a run, attaches the same file to its own VM.
std::shared_ptr<VfioAttachment> attachment_for(const VfioFileInfo& info) {
    static std::map<std::string, std::shared_ptr<VfioAttachment>> open;
    auto& a = open[info.path];
    if (a) return a;
    try {
        a = std::make_shared<VfioAttachment>(VfioAttachment::open(info));
    } catch (const VfioAttachError& e) {
        open.erase(info.path);
        if (e.kind() == VfioAttachError::Kind::usage) throw UsageError(e.what());
        throw EnvironmentError(e.what());
    }
    return open[info.path];
}

// Signal handlers may only store to atomics: the boots poll these.
std::atomic<bool> g_interrupted{false};
std::atomic<QemuGuest*> g_qemu{nullptr};
std::atomic<VmmGuest*> g_vmm{nullptr};

void on_signal(int) {
    g_interrupted.store(true);
    if (QemuGuest* q = g_qemu.load()) q->stop();
    if (VmmGuest* v = g_vmm.load()) v->stop();
}

// Ends the boot in progress without marking the run interrupted (the caller says why).
void stop_current_guest() {
    if (QemuGuest* q = g_qemu.load()) q->stop();
    if (VmmGuest* v = g_vmm.load()) v->stop();
}

class SignalScope {
public:
    SignalScope() {
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int_);
        sigaction(SIGTERM, &sa, &old_term_);
    }
    ~SignalScope() {
        sigaction(SIGINT, &old_int_, nullptr);
        sigaction(SIGTERM, &old_term_, nullptr);
    }

private:
    struct sigaction old_int_ {}, old_term_ {};
};

bool kvm_usable(std::string& why) {
    KvmOpen k = open_kvm();
    if (!k.fd) why = fmt::format("{} ({})", k.why, k.fix);
    return bool(k.fd);
}

std::string utc_stamp() {
    char buf[32];
    std::time_t now = std::time(nullptr);
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
    return buf;
}

// One boot's end, whatever ran it.
struct BootEnd {
    enum class Kind { exited, hung, crashed, interrupted, failed } kind = Kind::failed;
    uint32_t exit_code = 0;
    std::string detail;
};

struct Phase {
    std::string mode;   // coherent, noncoherent
    std::string label;  // the results' mode: coherent, noncoherent, coherent-repeat
};

// Everything one run needs, resolved and checked before anything boots.
struct Plan {
    std::string backend;   // kvm, qemu-kvm, qemu-tcg
    bool emulated = false;
    Config config;         // what the guest will parse (checked here with the same parser)
    std::string cmdline;   // patterns/footprints/reps/warmup/skip: the guest's command line
    std::vector<std::vector<Phase>> boots;  // kvm: one boot with every phase; qemu: one boot per mode
    uint64_t mem_bytes = 0;
    uint64_t tsc_khz = 0;
    std::string tsc_khz_source;
    std::string image;
    std::optional<VfioFileInfo> vfio, vfio_baseline;
    // kvm: the files opened and in their containers at planning time, so that a busy, non-viable
    // or unsupported file stops the run before anything is written; shared by every boot.
    std::shared_ptr<VfioAttachment> vfio_attachment, baseline_attachment;
    std::vector<std::string> qemu_baseline;  // qemu: BDFs passed in every boot (--vfio-baseline)
    std::vector<int> hop_cpus;  // kvm with --dirty-mask K >= 2: the K CPUs the vCPU hops through
    int vcpu_cpu = -1;       // where the vCPU (kvm) or QEMU (qemu-*) is pinned; -1: unpinned
    int neighbour_cpu = -1;  // where the host neighbour runs; -1: no neighbour
};

// The neighbour and the vCPU on two different CPUs: the vCPU's WBINVD exits happen on one, the
// neighbour measures on the other, as two tenants of one host would.
void place_neighbour(const RunOptions& o, Plan& plan) {
    if (o.migrate_ms) throw UsageError("--neighbour needs the vCPU to stay on one CPU: drop --migrate-ms");
    auto cpus = allowed_cpus();
    auto allowed = [&](int c) { return std::find(cpus.begin(), cpus.end(), c) != cpus.end(); };
    int vcpu = o.vcpu_cpu, nb = -1;
    if (vcpu >= 0 && !allowed(vcpu)) throw UsageError(fmt::format("--vcpu-cpu {} is not a CPU this process may use: choose one of {}", vcpu, cpu_list(cpus)));
    if (o.neighbour == "auto") {
        if (vcpu < 0 && !cpus.empty()) vcpu = cpus.front();
        std::string why;
        nb = pick_neighbour_cpu(vcpu, why);
        if (nb < 0) throw EnvironmentError(fmt::format("no CPU for the neighbour besides the vCPU's ({}): {}", vcpu, why));
    } else {
        uint64_t n = 0;
        if (!parse_u64(Str(o.neighbour.c_str()), n) || !allowed(int(n)))
            throw UsageError(fmt::format("--neighbour {}: use auto or one of the CPUs this process may use ({})", o.neighbour, cpu_list(cpus)));
        nb = int(n);
        if (vcpu < 0)
            for (int c : cpus)
                if (c != nb) {
                    vcpu = c;
                    break;
                }
        if (vcpu < 0 || vcpu == nb)
            throw UsageError(fmt::format("the neighbour and the vCPU both on CPU {}: choose another --neighbour or --vcpu-cpu", nb));
    }
    plan.vcpu_cpu = vcpu;
    plan.neighbour_cpu = nb;
}

}  // namespace

std::string guest_config(const RunOptions& o, const std::string& skip) {
    std::string s = fmt::format("patterns={} footprints={} reps={} warmup={} min_reps={} target={} budget_ms={}", o.patterns,
                                o.footprints, o.reps, o.warmup, o.min_reps, o.target_permille, o.budget_ms);
    if (!skip.empty()) s += " skip=" + skip;
    if (!o.pace.empty()) s += fmt::format(" pace={} pace_footprint={} pace_rounds={}", o.pace, o.pace_footprint, o.pace_rounds);
    if (o.dirty_mask > 1) s += fmt::format(" mask_width={}", o.dirty_mask);
    return s;
}

namespace {

std::vector<Phase> phases_for(const std::string& mode, const std::string& variant) {
    std::vector<Phase> p;
    if (mode == "coherent") p = {{"coherent", "coherent"}};
    else if (mode == "noncoherent") p = {{"noncoherent", "noncoherent"}};
    // A/B/A: the repeat shows whether the first phase's numbers held (drift, warm-up).
    else p = {{"coherent", "coherent"}, {"noncoherent", "noncoherent"}, {"coherent", "coherent-repeat"}};
    if (!variant.empty())
        for (auto& ph : p) ph.label += "+" + variant;
    return p;
}

const char* kSnoopControlHelp =
    "KVM executes a guest WBINVD for real only while a VFIO file whose devices lack IOMMU snoop control "
    "(Intel VT-d ECAP bit 7 clear, or an mdev device, which has no IOMMU) is attached to the VM. "
    "Pass --vfio /dev/vfio/N (a group) or /dev/vfio/devices/vfioX (a device cdev): bind a device to vfio-pci, "
    "or create an mdev (modprobe mtty; echo $(uuidgen) > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create). "
    "See `flushbench probe`.";

Plan make_plan(const RunOptions& o) {
    Plan plan;
    // Backend.
    std::string kvm_why;
    bool have_kvm = kvm_usable(kvm_why);
    plan.backend = o.backend;
    if (plan.backend == "native") {  // host user space: flushbench-native over the same table
        if (!o.pace.empty() || !o.neighbour.empty())
            throw UsageError("--pace and --neighbour need a guest: use --backend kvm, qemu-kvm or qemu-tcg");
        plan.cmdline = guest_config(o, o.skip);
        ConfigError err = parse_config(Str(plan.cmdline.c_str()), plan.config);
        if (err.message) throw UsageError(fmt::format("{}: '{}'", err.message, std::string(err.token.p, err.token.n)));
        if (::access(default_native_binary().c_str(), X_OK) != 0)
            throw EnvironmentError(fmt::format("{} not found: build it with `cmake --build build`", default_native_binary()));
        plan.boots = {{{"native", "native"}}};
        return plan;
    }
    if (plan.backend == "auto") {
        plan.backend = have_kvm ? "kvm" : "qemu-tcg";
        if (!have_kvm) fmt::print(stderr, "warning: {}; falling back to qemu-tcg, whose timings are emulated\n", kvm_why);
    }
    if (plan.backend != "kvm" && plan.backend != "qemu-kvm" && plan.backend != "qemu-tcg")
        throw UsageError(fmt::format("unknown backend '{}': use auto, kvm, qemu-kvm, qemu-tcg or native", o.backend));
    if (plan.backend != "qemu-tcg" && !have_kvm) throw EnvironmentError(fmt::format("backend {} needs KVM: {}", plan.backend, kvm_why));
    if (plan.backend != "kvm" && QemuGuest::which("qemu-system-x86_64").empty())
        throw EnvironmentError("qemu-system-x86_64 not found: install it with `apt-get install qemu-system-x86`");
    plan.emulated = plan.backend == "qemu-tcg";
    if (o.mode != "coherent" && o.mode != "noncoherent" && o.mode != "both")
        throw UsageError(fmt::format("unknown mode '{}': use coherent, noncoherent or both", o.mode));
    if (o.migrate_ms && plan.backend != "kvm") throw UsageError("--migrate-ms needs --backend kvm (QEMU's vCPU threads are its own)");

    // The guest's configuration, checked with the guest's own parser.
    plan.cmdline = guest_config(o, o.skip);
    ConfigError err = parse_config(Str(plan.cmdline.c_str()), plan.config);
    if (err.message) throw UsageError(fmt::format("{}: '{}'", err.message, std::string(err.token.p, err.token.n)));
    if (cells_per_phase(plan.config) == 0) throw UsageError("nothing to run: --patterns none needs --pace steps");
    if (!o.neighbour.empty()) {
        if (o.pace.empty()) throw UsageError("--neighbour needs guest phases to compare: give --pace (e.g. idle:2000,wbinvd@max:2000)");
        bool has_idle = std::any_of(plan.config.pace, plan.config.pace + plan.config.pace_count, [](const PaceStep& s) { return s.idle; });
        if (!has_idle) throw UsageError("--neighbour needs an idle step in --pace as its baseline (e.g. idle:2000,...)");
        if (o.slice_ms < 2 || o.slice_ms > 1000) throw UsageError("--slice-ms must be 2-1000");
        place_neighbour(o, plan);
    } else {
        plan.vcpu_cpu = o.vcpu_cpu;
    }

    // Guest RAM: the largest footprint plus room for the kernel and its tables.
    uint64_t llc = x86::llc_bytes(), largest = 0;
    for (size_t i = 0; i < plan.config.footprint_count; ++i) {
        bool ok;
        uint64_t b = resolve_footprint(plan.config.footprints[i], llc, ok);
        largest = std::max(largest, ok ? b : 0);
    }
    if (plan.config.pace_count) {
        bool ok;
        uint64_t b = resolve_footprint(plan.config.pace_footprint, llc, ok);
        largest = std::max(largest, ok ? b : 0);
    }
    constexpr uint64_t kKernelRoom = 64ull << 20, kMaxRam = 3ull << 30;
    uint64_t need = (largest + kKernelRoom + (2ull << 20) - 1) & ~((2ull << 20) - 1);
    plan.mem_bytes = o.mem_mib ? o.mem_mib << 20 : std::max<uint64_t>(need, 256ull << 20);
    if (need > kMaxRam)
        throw UsageError(fmt::format("footprint of {} MiB does not fit the guest's {} MiB limit: choose smaller --footprints",
                                     largest >> 20, (kMaxRam - kKernelRoom) >> 20));
    if (plan.mem_bytes > kMaxRam) throw UsageError(fmt::format("--mem-mib above {}: the guest maps RAM below 3 GiB", kMaxRam >> 20));
    if (plan.mem_bytes < need)
        throw UsageError(fmt::format("--mem-mib {} is too small for a {} MiB footprint: use at least {}", o.mem_mib, largest >> 20, need >> 20));

    // Snoop-control modes: what sysfs says first (fast, no side effects); the kernel's own answer
    // comes when the files are opened below and while the run goes.
    auto refuse_blocked = [](const VfioFileInfo& info, const std::string& what) {
        auto blocking = devices_blocking_vfio(info);
        if (!blocking.empty())
            throw EnvironmentError(fmt::format("{} is not viable: {}; every device of an IOMMU group must be bound to vfio-pci or unbound: {}",
                                               what, describe_blocking(blocking), bind_to_vfio_pci_fix(blocking.front().name)));
    };
    auto check_file = [&](const std::string& path, const char* flag) {
        VfioFileInfo info = describe_vfio_file(path);
        if (info.kind == VfioFileKind::not_vfio)
            throw UsageError(fmt::format("{} {} is not a VFIO group or device file: pass /dev/vfio/N or /dev/vfio/devices/vfioX", flag, path));
        if (!fs::exists(path)) throw EnvironmentError(fmt::format("{} {} does not exist: {}", flag, path, kSnoopControlHelp));
        refuse_blocked(info, fmt::format("{} {}", flag, path));
        return info;
    };
    // QEMU opens a passed-through device itself: check that it can, the way it will.
    auto check_pci = [&](const std::string& bdf, const char* flag) {
        fs::path dev = fs::path("/sys/bus/pci/devices") / bdf;
        if (bdf.empty() || !fs::exists(dev)) throw UsageError(fmt::format("{} {}: no such PCI device (lspci -D lists them)", flag, bdf));
        std::error_code ec;
        std::string driver = fs::read_symlink(dev / "driver", ec).filename().string();
        if (driver != "vfio-pci")
            throw EnvironmentError(fmt::format("{} {} is bound to {}, not vfio-pci: QEMU cannot pass it through. Fix: {}", flag, bdf,
                                               driver.empty() ? "no driver" : driver, bind_to_vfio_pci_fix(bdf)));
        std::string group = fs::read_symlink(dev / "iommu_group", ec).filename().string();
        if (group.empty()) throw EnvironmentError(fmt::format("{} {} has no IOMMU group: enable the IOMMU (intel_iommu=on / amd_iommu=on)", flag, bdf));
        VfioFileInfo info = describe_vfio_file("/dev/vfio/" + group);
        refuse_blocked(info, fmt::format("{} {} (IOMMU group {})", flag, bdf, group));
        return info;
    };
    auto refuse_coherent = [](const VfioFileInfo& info, const std::string& what) {
        if (info.verdict == Coherency::coherent)
            throw EnvironmentError(fmt::format("{} is coherent (its IOMMU enforces snoop control), so attaching it would not change how KVM "
                                               "handles WBINVD. {}", what, info.fix.empty() ? kSnoopControlHelp : info.fix));
        if (info.verdict == Coherency::unknown)
            fmt::print(stderr, "warning: sysfs cannot tell the coherency of {} ({}); the kernel's evidence decides the label\n", what,
                       info.explanation);
    };
    bool kvm = plan.backend == "kvm";
    bool wants_nc = o.mode != "coherent";
    if (!o.vfio.empty()) {
        if (!kvm) throw UsageError("--vfio needs --backend kvm; QEMU backends take --vfio-pci BDF");
        plan.vfio = check_file(o.vfio, "--vfio");
        refuse_coherent(*plan.vfio, "--vfio " + o.vfio);
    }
    if (!o.vfio_baseline.empty()) {
        VfioFileInfo info = kvm ? check_file(o.vfio_baseline, "--vfio-baseline") : check_pci(o.vfio_baseline, "--vfio-baseline");
        if (info.verdict == Coherency::noncoherent)
            throw UsageError(fmt::format("--vfio-baseline {} is non-coherent: the baseline must be a coherent file", o.vfio_baseline));
        if (o.vfio_baseline == o.vfio) throw UsageError("--vfio and --vfio-baseline name the same file: the baseline is a second, coherent one");
        plan.vfio_baseline = info;
        if (!kvm) plan.qemu_baseline = {o.vfio_baseline};
    }
    if (!o.vfio_pci.empty()) {
        if (kvm) throw UsageError("--vfio-pci is for the qemu backends; the kvm backend takes --vfio FILE");
        if (!wants_nc) throw UsageError("--vfio-pci names the non-coherent device, passed only in the noncoherent boot: use --mode "
                                        "noncoherent or both, or --vfio-baseline BDF for a coherent device in every boot");
        for (const auto& bdf : o.vfio_pci) refuse_coherent(check_pci(bdf, "--vfio-pci"), "--vfio-pci " + bdf);
    }
    if (wants_nc && kvm && !plan.vfio) throw EnvironmentError(fmt::format("--mode {} needs --vfio FILE. {}", o.mode, kSnoopControlHelp));
    if (wants_nc && !kvm && o.vfio_pci.empty())
        throw EnvironmentError(fmt::format("--mode {} on {} needs --vfio-pci BDF of a device without snoop control. {}", o.mode, plan.backend, kSnoopControlHelp));

    // A controlled wbinvd_dirty_mask: the vCPU hops through K CPUs before each whole-cache flush.
    if (o.dirty_mask) {
        if (!kvm) throw UsageError("--dirty-mask needs --backend kvm: only flushbench's VMM moves its vCPU when the guest asks");
        if (o.migrate_ms) throw UsageError("--dirty-mask and --migrate-ms both move the vCPU: choose one");
        if (!o.neighbour.empty()) throw UsageError("--dirty-mask moves the vCPU, the neighbour needs it on one CPU: drop one of them");
        if (o.dirty_mask > Config::kMaxMaskWidth) throw UsageError(fmt::format("--dirty-mask {}: at most {}", o.dirty_mask, Config::kMaxMaskWidth));
        auto cpus = allowed_cpus();
        if (o.dirty_mask > cpus.size())
            throw EnvironmentError(fmt::format("--dirty-mask {} needs {} CPUs; this process may use {} ({}): choose a smaller width", o.dirty_mask,
                                               o.dirty_mask, cpus.size(), cpu_list(cpus)));
        size_t first = 0;
        if (o.vcpu_cpu >= 0) {
            auto it = std::find(cpus.begin(), cpus.end(), o.vcpu_cpu);
            if (it == cpus.end()) throw UsageError(fmt::format("--vcpu-cpu {} is not a CPU this process may use: choose one of {}", o.vcpu_cpu, cpu_list(cpus)));
            first = size_t(it - cpus.begin());
        }
        for (uint32_t k = 0; k < o.dirty_mask; ++k) plan.hop_cpus.push_back(cpus[(first + k) % cpus.size()]);
        plan.vcpu_cpu = plan.hop_cpus.front();
        if (o.dirty_mask == 1) plan.hop_cpus.clear();  // pinned: one pCPU in the mask
    }

    auto phases = phases_for(o.mode, o.variant);
    if (plan.backend == "kvm") plan.boots.push_back(phases);
    else
        for (auto& p : phases)
            if (p.label.rfind("coherent-repeat", 0) != 0) plan.boots.push_back({p});  // one boot per mode

    for (const auto& e : o.events) {
        try {
            encode_event(e, Split::all);
        } catch (const std::invalid_argument& unknown) {
            throw UsageError(unknown.what());
        } catch (const std::exception&) {
            // Known to libpfm4 but not countable here: the cell will say unavailable, with why.
        }
    }
    plan.image = o.image.empty() ? default_guest_image() : o.image;
    if (!fs::exists(plan.image))
        throw EnvironmentError(fmt::format("guest image {} not found: build it with `cmake --build build` or pass --image", plan.image));
    try {
        ElfImage::load(plan.image);  // before anything is written: a bad image must not cost results
    } catch (const std::exception& e) {
        throw EnvironmentError(fmt::format("guest image {} is not a usable kernel: {}", plan.image, e.what()));
    }
    // Last, as it holds the files: opened, checked viable and put in their containers.
    if (kvm && plan.vfio && wants_nc) plan.vfio_attachment = attachment_for(*plan.vfio);
    if (kvm && plan.vfio_baseline) plan.baseline_attachment = attachment_for(*plan.vfio_baseline);
    return plan;
}

// Labels, progress and persistence for every cell, in the order they finish.
class CellSink {
public:
    CellSink(ResultsWriter& results, uint32_t total, bool quiet)
        : results_(results), quiet_(quiet), tty_(isatty(STDERR_FILENO) == 1), total_(total), start_(Clock::now()) {
        resumed_ = done_ = uint32_t(results.cells().size());
    }
    ~CellSink() { end_progress(); }

    void begin_run(const Plan& plan, uint32_t index) {
        plan_ = &plan;
        run_ = index;
    }

    void add(Cell c, const Phase& phase, uint64_t tsc_khz) {
        c.backend = plan_->backend;
        c.mode = phase.label;
        c.emulated = plan_->emulated;
        c.extra["run"] = run_;
        if (!c.tsc_khz) c.tsc_khz = tsc_khz;
        results_.add(c);
        ++done_;
        ++counts_[c.status];
        if (!quiet_) print(c);
        if (after_add_) after_add_();
    }
    // A phase's evidence (host/mode_evidence.h), journaled like a cell.
    void add_evidence(json phase) {
        phase["kind"] = "phase_evidence";
        results_.add_series(phase);
    }
    // Runs after every cell is journaled (the neighbour journals its slices with it).
    void after_add(std::function<void()> fn) { after_add_ = std::move(fn); }

    uint32_t done() const { return done_; }
    uint32_t total() const { return total_; }
    const std::map<CellStatus, uint32_t>& counts() const { return counts_; }

private:
    using Clock = std::chrono::steady_clock;

    // On a terminal: one line rewritten in place, with the current cell and the time left. In a
    // pipe or a log: a plain line per cell.
    void print(const Cell& c) {
        std::string what;
        if (c.status == CellStatus::ok && c.pace && c.pace->rate == "idle") {
            what = fmt::format("idle {} ms", c.pace->ms);
        } else if (c.status == CellStatus::ok) {
            Summary s = summarize(net_cycles(c));
            CostReading r = read_cost(s, c.floor_cycles);
            what = r.below_floor ? cost_text(s, c.floor_cycles) : fmt::format("median {:>12.0f} cycles", s.median);
            if (c.tsc_khz && !r.below_floor) what += fmt::format(" ({:.2f} us)", s.median / double(c.tsc_khz) * 1000.0);
            if (!c.method.empty()) what += fmt::format(", {} reps ({})", c.tsc.size(), c.stop);
            if (c.pace && c.pace->finished) what += fmt::format(", {} ops in {} ms", c.pace->ops, c.pace->ms);
            if (c.emulated) what += " [emulated]";
        } else {
            what = c.reason;
        }
        std::string line = fmt::format("[{:>4}/{}] {:<8} {:<16} {:<14} {:>10} B  {:<11} {}", done_, total_, c.backend, c.mode,
                                       c.label(), c.footprint_bytes, to_string(c.status), what);
        if (!tty_) return fmt::print(stderr, "{}\n", line);
        if (!is_measured(c.status)) fmt::print(stderr, "\r\033[K{}\n", line);  // failures stay on screen
        double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
        uint32_t fresh = done_ - resumed_;
        double left = fresh ? elapsed / fresh * double(total_ - done_) : 0;
        int width = 30, filled = total_ ? int(width * double(done_) / total_) : width;
        fmt::print(stderr, "\r\033[K[{}{}] {}/{} {}/{} {}  ~{:.0f}s left", std::string(size_t(filled), '#'),
                   std::string(size_t(width - filled), '.'), done_, total_, c.label(), c.footprint_bytes, c.mode, left);
        progress_shown_ = true;
    }
    void end_progress() {
        if (progress_shown_) fmt::print(stderr, "\n");
        progress_shown_ = false;
    }

    ResultsWriter& results_;
    const Plan* plan_ = nullptr;
    uint32_t run_ = 0;
    bool quiet_, tty_, progress_shown_ = false;
    uint32_t done_ = 0, resumed_ = 0, total_ = 0;
    Clock::time_point start_;
    std::map<CellStatus, uint32_t> counts_;
    std::function<void()> after_add_;
};

uint32_t planned_cells(const Plan& plan) {
    uint32_t phases = 0;
    for (const auto& b : plan.boots) phases += uint32_t(b.size());
    return cells_per_phase(plan.config) * phases;
}

// Cells a boot never got to, so that none goes missing from the results: the plan's walk
// (common/cell_plan.h) from `first_id`, footprints as the guest resolved them when it said (its
// `config` record), else against this host's LLC.
std::vector<Cell> cells_from(const Plan& plan, uint32_t first_id, uint32_t phase_count, const std::vector<uint64_t>& guest_footprints) {
    Config config = plan.config;
    config.phases = phase_count;
    std::vector<Cell> out;
    uint64_t llc = x86::llc_bytes();
    for_each_cell(config, [&](const PlannedCell& planned) {
        if (planned.id < first_id) return;
        Cell c;
        c.pattern = planned.pattern->name;
        c.phase = planned.phase;
        c.unit = unit_name(planned.pattern->unit);
        int index = footprint_index(config, planned.footprint);
        bool ok = true;
        if (index >= 0 && size_t(index) < guest_footprints.size()) c.footprint_bytes = guest_footprints[size_t(index)];
        else if (planned.footprint) c.footprint_bytes = resolve_footprint(*planned.footprint, llc, ok);
        if (planned.step) {
            const PaceStep& step = *planned.step;
            Pace pace{step.idle ? "idle" : step.rate_hz ? std::to_string(step.rate_hz) : "max", step.ms};
            pace.round = planned.slot.round, pace.slot = planned.slot.slot;
            c.pace = pace;
        }
        out.push_back(std::move(c));
    });
    return out;
}

// Drives the KVM-VFIO device between phases, on the vCPU thread while the vCPU is stopped. The
// files were opened and put in their containers when the run was planned (vfio_attachment.h).
class SnoopControl {
public:
    SnoopControl(Vm& vm, const Plan& plan) : nc_(plan.vfio_attachment), baseline_(plan.baseline_attachment) {
        if (!KvmVfioDevice::supported(vm)) {
            if (nc_ || baseline_) throw EnvironmentError("this KVM cannot create a KVM-VFIO device (KVM_CREATE_DEVICE type 4 failed)");
            return;
        }
        device_ = std::make_unique<KvmVfioDevice>(vm);
        if (baseline_) add(*baseline_), baseline_->bind();
        // A cdev is bound to iommufd only after KVM knows it; it leaves again until its phase.
        if (nc_ && nc_->is_cdev()) add(*nc_), nc_->bind(), device_->del_file(nc_->fd());
    }
    bool device_created() const { return device_ != nullptr; }

    void enter(const Phase& phase) {
        bool want_nc = phase.mode == "noncoherent";
        if (want_nc && !nc_attached_) add(*nc_), nc_attached_ = true;
        if (!want_nc && nc_attached_) device_->del_file(nc_->fd()), nc_attached_ = false;
    }
    // What is attached to the VM now, with the kernel's answer about each file.
    std::vector<AttachedFile> attached() const {
        std::vector<AttachedFile> a;
        if (baseline_) a.push_back({baseline_->path(), "baseline", baseline_->coherency()});
        if (nc_attached_) a.push_back({nc_->path(), "noncoherent", nc_->coherency()});
        return a;
    }

private:
    void add(const VfioAttachment& file) {
        try {
            device_->add_file(file.fd());
        } catch (const KvmVfioError& e) {
            if (e.kind() == VfioFileError::not_vfio_file)
                throw UsageError(fmt::format("{} is not a VFIO file (the kernel said EINVAL): pass /dev/vfio/N or /dev/vfio/devices/vfioX", file.path()));
            throw EnvironmentError(fmt::format("attaching {} to the KVM-VFIO device failed: {}", file.path(), e.what()));
        }
    }
    std::unique_ptr<KvmVfioDevice> device_;
    std::shared_ptr<VfioAttachment> nc_, baseline_;
    bool nc_attached_ = false;
};

json to_json(const CounterValue& v) {
    json j = {{"name", v.name}, {"unit", v.unit}, {"source", v.source}, {"scaling", v.scaling}};
    if (v.value) j["value"] = *v.value;
    else j["unavailable"] = v.unavailable;  // never a silent 0
    return j;
}

// Host counters for one cell, opened lazily on the vCPU thread (the thread KVM_RUN runs on):
// the user's events split into guest-only and host-only groups (how much of a WBINVD's cost is
// the guest's and how much KVM's), software events, and KVM exit attribution.
class CellCounters {
public:
    explicit CellCounters(std::vector<std::string> events) : events_(std::move(events)) {}
    void start() {
        if (!opened_) open();
        for (auto& g : groups_) g.group.start();
        if (trace_) trace_->start();
    }
    json stop() {
        json out = json::object();
        for (auto& g : groups_) {
            g.group.stop();
            json values = json::array();
            for (const auto& v : g.group.read()) values.push_back(to_json(v));
            out[g.label] = values;
        }
        if (trace_) {
            trace_->stop();
            out["kvm_exits"] = trace_->result();
        } else {
            out["kvm_exits"] = {{"unavailable", trace_error_}};
        }
        if (!open_error_.empty()) out["unavailable"] = open_error_;
        return out;
    }

private:
    struct Labelled {
        std::string label;
        CounterGroup group;
    };
    void open() {
        opened_ = true;
        try {
            if (!events_.empty()) {
                groups_.push_back({"guest_only", CounterGroup::open(0, events_, Split::guest_only)});
                groups_.push_back({"host_only", CounterGroup::open(0, events_, Split::host_only)});
            }
            groups_.push_back({"software", CounterGroup::open(0, software_events(), Split::all)});
        } catch (const std::exception& e) {
            open_error_ = e.what();
        }
        try {
            trace_ = std::make_unique<KvmExitTrace>(KvmExitTrace::open(0));
            if (!trace_->available()) trace_error_ = trace_->result().value("unavailable", "tracepoints unavailable"), trace_.reset();
        } catch (const std::exception& e) {
            trace_error_ = e.what();
        }
    }
    std::vector<std::string> events_;
    bool opened_ = false;
    std::vector<Labelled> groups_;
    std::unique_ptr<KvmExitTrace> trace_;
    std::string open_error_, trace_error_;
};

json stats_delta(const KvmStats& before, const KvmStats& after) {
    json d = json::object();
    for (const auto& [k, v] : after.values) {
        auto it = before.values.find(k);
        if (it != before.values.end() && v != it->second) d[k] = int64_t(v - it->second);
    }
    return d;
}

// One boot on the built-in VMM. Records arrive with the vCPU stopped, so phase changes and KVM
// statistics snapshots happen between two guest instructions.
BootEnd boot_kvm(const Plan& plan, const RunOptions& o, const std::vector<Phase>& phases, const std::string& cmdline,
                 RecordStream& stream, json& boot_facts, uint64_t& tsc_khz, json& cell_extra, ModeWitness& witness,
                 const std::function<void(const std::string&)>& contradicted) {
    struct Events : VmmEvents {
        RecordStream& stream;
        json& cell_extra;  // picked up by the cell that the next "end" record completes
        VmmGuest* guest = nullptr;
        std::optional<VmmKvmStats> cell_start;
        CellCounters* counters = nullptr;
        Events(RecordStream& s, json& extra) : stream(s), cell_extra(extra) {}
        // Console text only (records come by port), kept in the stream's tail for crash reports.
        void on_serial(std::string_view bytes) override { stream.feed_bytes(bytes); }
        // On the vCPU thread, the vCPU stopped: the counters bracket exactly the guest's cell.
        void on_record(std::string_view line) override {
            if (line.rfind("FB1 cell ", 0) == 0) {
                cell_start = guest->kvm_stats();
                if (counters) counters->start();
            }
            if (line.rfind("FB1 end ", 0) == 0 && cell_start) {
                if (counters) cell_extra["host_counters"] = counters->stop();
                auto now = guest->kvm_stats();
                cell_extra["kvm_stats_delta"] = {{"vcpu", stats_delta(cell_start->vcpu, now.vcpu)},
                                                 {"vm", stats_delta(cell_start->vm, now.vm)}};
            }
            stream.feed_line(line);
        }
    } events(stream, cell_extra);
    CellCounters counters(o.events);
    events.counters = &counters;

    ElfImage image = ElfImage::load(plan.image);
    VmmOptions vo;
    vo.mem_bytes = plan.mem_bytes;
    vo.cmdline = cmdline;
    if (plan.vcpu_cpu >= 0) vo.cpu = plan.vcpu_cpu;
    vo.migrate_every_ms = std::chrono::milliseconds(o.migrate_ms);
    vo.hop_cpus = plan.hop_cpus;
    VmmGuest guest(image, vo, events);
    events.guest = &guest;
    SnoopControl snoop(guest.vm(), plan);
    boot_facts["kvm_vfio_device"] = snoop.device_created() ? "created" : "unsupported";
    if (uint64_t khz = vcpu_tsc_khz(guest.vcpu().fd())) tsc_khz = khz;
    boot_facts["tsc_khz"] = tsc_khz;
    auto stats = guest.kvm_stats();
    if (!stats.vcpu.unavailable.empty()) boot_facts["kvm_stats_unavailable"] = stats.vcpu.unavailable;

    // The phase's window opens before its KVM-VFIO change, so the change is counted in it.
    stream.on_phase([&](uint32_t index) {
        if (index >= phases.size()) return;
        const PhaseEvidence& ev = witness.begin(index, phases[index].label, phases[index].mode, [&] {
            snoop.enter(phases[index]);
            return snoop.attached();
        });
        if (ev.judgement.verdict == Verdict::contradicted) contradicted(contradiction_message(ev));
    });
    g_vmm.store(&guest);
    VmmOutcome out = guest.run(o.cell_timeout);
    g_vmm.store(nullptr);
    witness.end();  // before the VM and its KVM-VFIO device go (their teardown unregisters)
    boot_facts["exits"] = {{"serial", out.exits.serial}, {"record", out.exits.record}, {"hop", out.exits.hop},
                           {"io_other", out.exits.io_other}, {"mmio", out.exits.mmio}, {"total", out.exits.total()}};
    if (!plan.hop_cpus.empty()) boot_facts["hop_cpus"] = plan.hop_cpus;
    if (out.protocol_errors) boot_facts["protocol_errors"] = {{"count", out.protocol_errors}, {"last", out.last_protocol_error}};
    if (!out.cpus_used.empty()) boot_facts["cpus_used"] = out.cpus_used;
    BootEnd end;
    end.detail = out.detail;
    switch (out.kind) {
        case VmmOutcome::Kind::exited: end.kind = BootEnd::Kind::exited, end.exit_code = out.exit_code; break;
        case VmmOutcome::Kind::hung: end.kind = BootEnd::Kind::hung; break;
        case VmmOutcome::Kind::interrupted: end.kind = BootEnd::Kind::interrupted; break;
        case VmmOutcome::Kind::shutdown:
        case VmmOutcome::Kind::halted:
        case VmmOutcome::Kind::crashed: end.kind = BootEnd::Kind::crashed; break;
    }
    if (out.kind == VmmOutcome::Kind::shutdown && end.detail.empty()) end.detail = "triple fault (KVM_EXIT_SHUTDOWN)";
    return end;
}

// One boot per mode: the non-coherent devices only in the noncoherent boot (QEMU adds every
// passed-through device to its KVM-VFIO device for the VM's whole life), the baseline in every boot.
BootEnd boot_qemu(const Plan& plan, const RunOptions& o, const Phase& phase, const std::string& cmdline, RecordStream& stream,
                  json& boot_facts, ModeWitness& witness, const std::function<void(const std::string&)>& contradicted) {
    QemuOptions qo;
    qo.image = plan.image;
    qo.machine = o.machine;
    qo.kvm = plan.backend == "qemu-kvm";
    qo.mem_mib = plan.mem_bytes >> 20;
    qo.cmdline = cmdline;
    qo.vfio_pci = plan.qemu_baseline;
    std::vector<AttachedFile> attached;
    // QEMU owns the containers: only kprobes can tell what KVM made of the devices.
    KernelCoherency qemus{Coherency::unknown, "", "QEMU opened it in its own container"};
    for (const auto& bdf : plan.qemu_baseline) attached.push_back({bdf, "baseline", qemus});
    if (phase.mode == "noncoherent")
        for (const auto& bdf : o.vfio_pci) qo.vfio_pci.push_back(bdf), attached.push_back({bdf, "noncoherent", qemus});
    qo.pin_cpu = plan.vcpu_cpu;
    QemuGuest q(qo);
    boot_facts["qemu_argv"] = q.argv();
    // The window opens before QEMU starts: it adds its devices to KVM before the guest runs.
    witness.begin(0, phase.label, phase.mode, [&] { return attached; });
    stream.on_phase([&](uint32_t) {
        const PhaseEvidence& ev = witness.recheck();
        if (ev.judgement.verdict == Verdict::contradicted) contradicted(contradiction_message(ev));
    });
    g_qemu.store(&q);
    auto silence = std::chrono::duration_cast<std::chrono::milliseconds>(o.cell_timeout);
    QemuOutcome out = q.run([&](std::string_view b) { stream.feed_bytes(b); },
                            [&](std::chrono::milliseconds silent) { return silent > silence; });
    g_qemu.store(nullptr);
    boot_facts["first_output_us"] = out.first_output.count();
    BootEnd end;
    end.detail = out.detail;
    switch (out.kind) {
        case QemuOutcome::Kind::exited: end.kind = BootEnd::Kind::exited, end.exit_code = uint32_t(out.guest_exit_code); break;
        case QemuOutcome::Kind::hung: end.kind = BootEnd::Kind::hung; break;
        case QemuOutcome::Kind::interrupted: end.kind = BootEnd::Kind::interrupted; break;
        case QemuOutcome::Kind::reset:
        case QemuOutcome::Kind::killed: end.kind = BootEnd::Kind::crashed; break;
        case QemuOutcome::Kind::failed: end.kind = BootEnd::Kind::failed; break;
    }
    return end;
}

// The boot's timing floor from the guest's nop calibration (statistics.h timing_floor).
double boot_floor(const RecordStream::Calibration& cal) {
    return timing_floor(estimates(cal.value, cal.ref, cal.k));
}

json calibration_json(const RecordStream::Calibration& cal) {
    if (cal.value.empty()) return {{"unavailable", "the guest sent no calibration (a guest older than this host?)"}};
    Summary s = summarize(estimates(cal.value, cal.ref, cal.k));
    return {{"method", "batch"}, {"pattern", "nop"}, {"k", cal.k}, {"n", s.n}, {"median_cycles", s.median},
            {"median_ci", to_json(s.median_ci)}, {"floor_cycles", boot_floor(cal)}};
}

// Boots until every cell of these phases is accounted for: after a hung or crashed cell, the
// guest restarts at the next cell with the culprit's pattern skipped (it would hang again).
void run_boot_group(const Plan& plan, const RunOptions& o, const std::vector<Phase>& phases, CellSink& sink, json& boots_log,
                    const std::vector<Cell>& already, uint32_t run_index) {
    uint32_t from = 0, cells_total = cells_per_phase(plan.config) * uint32_t(phases.size());
    std::string skips = o.skip;
    // Resuming: this group's cells in the journal are its first ones, in id order; patterns that
    // hung or crashed stay skipped.
    for (const auto& c : already) {
        if (c.extra.value("run", 0u) != run_index) continue;
        if (std::none_of(phases.begin(), phases.end(), [&](const Phase& p) { return p.label == c.mode; })) continue;
        ++from;
        if ((c.status == CellStatus::hung || c.status == CellStatus::crashed) && skips.find(c.pattern) == std::string::npos)
            skips += (skips.empty() ? "" : ",") + c.pattern + ":" + (c.status == CellStatus::hung ? "hung" : "crashed") + "-earlier-in-this-run";
    }
    uint64_t tsc_khz = plan.tsc_khz;
    // Paced steps keep their rates, and cells their time budgets, by the TSC rate the host knows,
    // not a guest guess (CPUID often has none).
    uint64_t guest_khz = plan.tsc_khz ? plan.tsc_khz : native_tsc_rate().khz;
    while (from < cells_total && !g_interrupted.load()) {
        std::string cmdline = guest_config(o, skips) + fmt::format(" phases={} from={}", phases.size(), from);
        if (!o.inject.empty()) cmdline += " inject=" + o.inject;
        if (guest_khz) cmdline += fmt::format(" tsc_khz={}", guest_khz);
        RecordStream stream;
        json facts = {{"cmdline", cmdline}}, cell_extra = json::object();
        // The kernel's evidence for this boot's mode labels. On the kvm backend the probes count
        // this process's KVM-VFIO work, so they open here, before the vCPU thread exists.
        ModeWitness witness(CoherencyProbes::open(plan.backend == "kvm"), run_index, uint32_t(boots_log.size()));
        std::optional<std::string> contradiction;  // once set, nothing more is written under a label
        auto contradicted = [&](const std::string& why) {
            if (!contradiction) contradiction = why;
            stop_current_guest();
        };
        stream.on_cell_begin([&] { witness.cell_begin(); });
        std::optional<double> floor;  // from the guest's calibration, once per boot
        stream.on_cell([&](Cell&& c) {
            if (contradiction) return;
            if (!floor) floor = boot_floor(stream.calibration());
            c.floor_cycles = *floor;
            c.extra = std::exchange(cell_extra, json::object());
            c.mode_evidence = witness.cell_end();
            if (c.mode_evidence.value("verdict", "") == to_string(Verdict::contradicted))
                return contradicted(contradiction_message(witness.phases().back()) + " (cell " + c.label() + ")");
            sink.add(std::move(c), phases.at(std::min<size_t>(c.phase, phases.size() - 1)), tsc_khz);
        });
        // Memory-controller traffic (WBINVD's write-backs are the physical cost) for the whole boot.
        PcmSidecar pcm = PcmSidecar::start(0.1);
        BootEnd end;
        try {
            end = plan.backend == "kvm" ? boot_kvm(plan, o, phases, cmdline, stream, facts, tsc_khz, cell_extra, witness, contradicted)
                                        : boot_qemu(plan, o, phases.front(), cmdline, stream, facts, witness, contradicted);
        } catch (...) {
            witness.end();
            for (const auto& p : witness.phases()) sink.add_evidence(to_json(p));
            throw;
        }
        witness.end();
        facts["mode_evidence"] = {{"kprobes", witness.describe_probes()}, {"phases", json::array()}};
        for (const auto& p : witness.phases()) {
            json j = to_json(p);
            sink.add_evidence(j);
            facts["mode_evidence"]["phases"].push_back({{"label", p.label}, {"verdict", j["verdict"]}, {"summary", j["summary"]}});
        }
        facts["pcm"] = pcm.stop();
        facts["end"] = {{"kind", int(end.kind)}, {"detail", end.detail}, {"cells", stream.cells_done()},
                        {"noise_lines", stream.health().noise_lines}, {"corrupt_lines", stream.health().corrupt_lines},
                        {"protocol_errors", stream.health().protocol_errors}, {"errors", stream.health().first_errors}};
        if (!stream.hello().empty()) facts["guest"] = stream.hello();
        facts["run"] = run_index;
        facts["calibration"] = calibration_json(stream.calibration());
        boots_log.push_back(facts);

        if (contradiction) throw ModeContradiction(*contradiction);
        if (end.kind == BootEnd::Kind::failed) throw EnvironmentError(fmt::format("{} could not run the guest: {}", plan.backend, end.detail));
        if (stream.guest_error() && stream.cells_done() == 0 && end.kind == BootEnd::Kind::exited &&
            end.exit_code == uint32_t(boot::ExitCode::bad_config))
            throw UsageError(fmt::format("the guest rejected its configuration: {}", *stream.guest_error()));
        if (stream.hello().empty() && end.kind == BootEnd::Kind::crashed && stream.health().records == 0)
            throw EnvironmentError(fmt::format("{} never heard from the guest: {}", plan.backend, end.detail));
        from += uint32_t(stream.cells_done());
        if (stream.finished() || g_interrupted.load()) break;
        if (end.kind == BootEnd::Kind::interrupted) break;

        Cell culprit;
        if (stream.open_cell()) {
            culprit = *stream.open_cell();
            from = uint32_t(stream.open_cell_id()) + 1;
        } else {
            // Died between cells: the next one never began. Record it and move past it.
            auto missing = cells_from(plan, from, uint32_t(phases.size()), stream.guest_footprints());
            if (missing.empty()) break;
            culprit = missing.front();
            ++from;
        }
        culprit.tsc.clear();
        culprit.guest_pmu.clear();
        culprit.last_output = stream.tail();
        if (!witness.phases().empty()) {
            const PhaseEvidence& p = witness.phases().back();
            culprit.mode_evidence = {{"run", p.run}, {"boot", p.boot}, {"phase", p.phase}, {"verdict", to_string(p.judgement.verdict)},
                                     {"source", p.judgement.source}, {"summary", p.judgement.summary}};
        }
        if (end.kind == BootEnd::Kind::hung) {
            culprit.status = CellStatus::hung;
            culprit.reason = fmt::format("no guest output for {} s; the watchdog stopped the guest", o.cell_timeout.count());
        } else {
            culprit.status = CellStatus::crashed;
            culprit.reason = end.detail.empty() ? "guest stopped without finishing" : end.detail;
            if (stream.guest_error()) culprit.reason += " (" + *stream.guest_error() + ")";
        }
        sink.add(culprit, phases.at(std::min<size_t>(culprit.phase, phases.size() - 1)), tsc_khz);
        std::string why = culprit.status == CellStatus::hung ? "hung-earlier-in-this-run" : "crashed-earlier-in-this-run";
        if (skips.find(culprit.pattern + ":") == std::string::npos && skips.find(culprit.pattern) == std::string::npos)
            skips += (skips.empty() ? "" : ",") + culprit.pattern + ":" + why;
    }
}

// Each run's timing floor, under the table.
std::string floor_lines(const json& timing) {
    std::string out;
    for (const auto& t : timing) {
        const json& f = t["floor_cycles"];
        out += fmt::format("  timing floor, run {} ({}): {} ({}); self-check {}\n", t.value("run", 0u) + 1, t.value("backend", "?"),
                           f.is_number() ? fmt::format("±{:.1f} cycles", f.get<double>()) : std::string("unavailable"),
                           t.value("floor_source", ""), t.value("check", "?"));
    }
    return out;
}

// The terminal's closing table: median net TSC cycles per cell, one column per backend/mode, and
// under each column what the kernel said about its mode label.
std::string summary_table(const std::vector<Cell>& cells) {
    std::vector<std::string> columns;
    std::map<std::pair<std::string, uint64_t>, std::map<std::string, std::string>> rows;
    std::vector<std::pair<std::string, uint64_t>> order;
    std::map<std::string, std::set<std::string>> verdicts, sources, unverified;
    for (const auto& c : cells) {
        std::string col = c.backend + "/" + c.mode;
        if (std::find(columns.begin(), columns.end(), col) == columns.end()) columns.push_back(col);
        auto key = std::make_pair(c.label(), c.footprint_bytes);
        if (!rows.count(key)) order.push_back(key);
        std::string v = to_string(c.status);
        if (c.status == CellStatus::ok && !c.tsc.empty()) v = cost_text(summarize(net_cycles(c)), c.floor_cycles);
        rows[key][col] = v;
        std::string verdict = c.mode_evidence.value("verdict", "unverified");
        verdicts[col].insert(verdict);
        if (std::string src = c.mode_evidence.value("source", ""); !src.empty()) sources[col].insert(src);
        if (verdict == "unverified") unverified[col].insert(c.mode_evidence.value("summary", "no evidence recorded"));
    }
    std::string out = fmt::format("\n{:<16} {:>10}", "pattern", "bytes");
    for (const auto& col : columns) out += fmt::format(" {:>28}", col);
    out += "   (median net TSC cycles, per op or per footprint)\n";
    for (const auto& key : order) {
        out += fmt::format("{:<16} {:>10}", key.first, key.second);
        for (const auto& col : columns) out += fmt::format(" {:>28}", rows[key].count(col) ? rows[key][col] : "-");
        out += "\n";
    }
    out += fmt::format("{:<27}", "mode evidence");
    for (const auto& col : columns) out += fmt::format(" {:>28}", fmt::format("{}", fmt::join(verdicts[col], "/")));
    out += "\n";
    for (const auto& col : columns) {
        if (!sources[col].empty()) out += fmt::format("  {}: {} ({})\n", col, fmt::join(verdicts[col], "/"), fmt::join(sources[col], ", "));
        for (const auto& why : unverified[col]) out += fmt::format("  {}: UNVERIFIED: {}\n", col, why);
    }
    return out;
}

}  // namespace

std::string default_guest_image() {
    // Beside the binary (build/bin/flushbench -> build/guest/...), else the build tree it came from.
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        fs::path p = self.parent_path().parent_path() / "guest" / "flushbench-guest.elf";
        if (fs::exists(p)) return p.string();
    }
    return std::string(FLUSHBENCH_BUILD_DIR) + "/guest/flushbench-guest.elf";
}

namespace {

// The host neighbour for one run: started before the guest boots, stopped after its last cell,
// its slices journaled with every cell so that an interrupted run keeps them.
class NeighbourScope {
public:
    NeighbourScope(const Plan& plan, const RunOptions& o, uint32_t run, ResultsWriter& results, CellSink& sink, bool quiet)
        : run_(run), results_(results), sink_(sink) {
        if (plan.neighbour_cpu < 0) return;
        NeighbourOptions no;
        no.cpu = plan.neighbour_cpu;
        no.slice = std::chrono::milliseconds(o.slice_ms);
        no.buffer_bytes = o.neighbour_bytes;
        try {
            neighbour_ = std::make_unique<Neighbour>(Neighbour::start(no));
        } catch (const std::exception& e) {
            throw EnvironmentError(fmt::format("the neighbour could not start: {}", e.what()));
        }
        results_.add_series(neighbour_start_chunk(run, plan.backend, plan.vcpu_cpu, *neighbour_));
        if (!quiet)
            fmt::print(stderr, "flushbench: neighbour on CPU {} ({} KiB, {} ms slices), vCPU pinned to CPU {}\n", neighbour_->cpu(),
                       neighbour_->buffer_bytes() >> 10, o.slice_ms, plan.vcpu_cpu);
        sink_.after_add([this] { journal(neighbour_->take()); });
    }
    ~NeighbourScope() {
        if (!neighbour_) return;
        sink_.after_add(nullptr);
        try {
            journal(neighbour_->stop());
        } catch (const std::exception& e) {
            fmt::print(stderr, "flushbench: the neighbour's last slices were lost: {}\n", e.what());
        }
    }

private:
    void journal(const std::vector<NeighbourSlice>& slices) {
        if (!slices.empty()) results_.add_series(neighbour_slices_chunk(run_, slices, neighbour_->capped()));
    }
    uint32_t run_;
    ResultsWriter& results_;
    CellSink& sink_;
    std::unique_ptr<Neighbour> neighbour_;
};

// One flushbench-native process for the whole run (all or nothing, also when resuming).
void run_native_into(const RunOptions& o, CellSink& sink, const std::vector<Cell>& already, uint32_t run_index) {
    if (std::any_of(already.begin(), already.end(), [&](const Cell& c) { return c.extra.value("run", 0u) == run_index; })) return;
    NativeOptions no;
    no.patterns = o.patterns;
    no.footprints = o.footprints;
    no.skip = o.skip;
    no.reps = o.reps;
    no.warmup = o.warmup;
    no.min_reps = o.min_reps;
    no.target_permille = o.target_permille;
    no.budget_ms = o.budget_ms;
    no.cpu = o.vcpu_cpu;
    no.echo_stderr = !o.quiet;
    NativeResults r = run_native_bench(no);
    for (auto& c : r.cells) {
        uint64_t khz = c.tsc_khz;
        c.mode_evidence = {{"verdict", to_string(Verdict::confirmed)}, {"source", "native"},
                           {"summary", "host user space: no VM, so no snoop-control mode"}};
        sink.add(std::move(c), {"native", "native"}, khz);
    }
}

// The one execution path of fresh and resumed runs, single or from a matrix: every run's boots
// into one results file, then the final file with statistics.
int execute(const std::vector<Plan>& plans, const std::vector<RunOptions>& runs, ResultsWriter& results, bool quiet) {
    SignalScope signals;
    g_interrupted.store(false);
    std::vector<Cell> already = results.cells();
    uint32_t total = 0;
    for (const auto& p : plans) total += planned_cells(p);
    int status = kExitOk;
    std::string failure;
    json boots_log = json::array();
    {
        CellSink sink(results, total, quiet);
        for (size_t i = 0; i < plans.size() && !g_interrupted.load() && failure.empty(); ++i) {
            const Plan& plan = plans[i];
            if (!quiet)
                fmt::print(stderr, "flushbench: run {}/{}: {} boot(s) on {}, guest '{}'\n", i + 1, plans.size(), plan.boots.size(),
                           plan.backend, plan.cmdline);
            sink.begin_run(plan, uint32_t(i));
            try {
                if (plan.backend == "native") {
                    run_native_into(runs[i], sink, already, uint32_t(i));
                    continue;
                }
                auto done = std::count_if(already.begin(), already.end(), [&](const Cell& c) { return c.extra.value("run", 0u) == i; });
                if (uint32_t(done) >= planned_cells(plan)) continue;  // resumed, and this run was complete
                NeighbourScope neighbour(plan, runs[i], uint32_t(i), results, sink, quiet);
                for (const auto& phases : plan.boots) {
                    if (g_interrupted.load()) break;
                    run_boot_group(plan, runs[i], phases, sink, boots_log, already, uint32_t(i));
                }
            } catch (const UsageError& e) {
                failure = e.what(), status = kExitUsage;
            } catch (const EnvironmentError& e) {
                failure = e.what(), status = kExitEnvironment;
            } catch (const std::exception& e) {
                failure = e.what(), status = kExitEnvironment;
            }
        }
    }
    if (!failure.empty()) fmt::print(stderr, "flushbench: {}\n", failure);

    bool interrupted = g_interrupted.load();
    std::map<CellStatus, uint32_t> counts;
    for (const auto& c : results.cells()) ++counts[c.status];
    json phases = json::array();
    for (const auto& chunk : results.series())
        if (chunk.value("kind", "") == "phase_evidence") phases.push_back(chunk), phases.back().erase("kind");
    json timing = timing_check(results.cells());
    json summary = {{"boots", boots_log}, {"phases", phases}, {"timing", timing}, {"cells", results.cells().size()}, {"cells_planned", total},
                    {"resumed_cells", already.size()}, {"interrupted", interrupted}, {"error", failure},
                    {"derived", derived_ratios(results.cells())}};
    json extra = json::object();
    try {
        json nb = neighbour_results(results.series(), results.cells());
        if (!nb.empty()) extra["flushbench_neighbour"] = nb;
    } catch (const std::exception& e) {
        summary["neighbour_error"] = e.what();
        fmt::print(stderr, "flushbench: the neighbour's slices could not be analysed: {}\n", e.what());
    }
    try {
        std::string path = results.finish(summary, extra);
        std::string parts;
        for (const auto& [st, n] : counts) parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", n, to_string(st));
        fmt::print(stderr, "flushbench: {} of {} cells ({}) -> {}\n", results.cells().size(), total, parts.empty() ? "none" : parts, path);
        for (const auto& line : timing_warnings(timing)) fmt::print(stderr, "flushbench: {}\n", line);
        if (!quiet) fmt::print(stderr, "{}", summary_table(results.cells()));
        if (!quiet) fmt::print(stderr, "{}", floor_lines(timing));
        if (!quiet && extra.contains("flushbench_neighbour")) fmt::print(stderr, "{}", neighbour_summary(extra["flushbench_neighbour"]));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}; every finished cell is still in {}\n", e.what(), results.journal());
        return kExitEnvironment;
    }
    if (interrupted) {
        fmt::print(stderr, "flushbench: interrupted; finished cells were written\n");
        return kExitInterrupted;
    }
    if (status != kExitOk) return status;
    for (const auto& [st, n] : counts)
        if (!is_measured(st) && n) return kExitCellsFailed;
    return kExitOk;
}

// Checks the options; on failure prints the one-line reason and returns the exit status.
std::optional<int> checked_plan(const RunOptions& o, Plan& plan) {
    try {
        plan = make_plan(o);
    } catch (const UsageError& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitUsage;
    } catch (const EnvironmentError& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitEnvironment;
    }
    plan.tsc_khz = plan.backend == "kvm" ? 0 : kvm_default_tsc_khz();
    return std::nullopt;
}

}  // namespace

json to_json(const RunOptions& o) {
    return {{"backend", o.backend}, {"mode", o.mode}, {"vfio", o.vfio}, {"vfio_baseline", o.vfio_baseline},
            {"vfio_pci", o.vfio_pci}, {"machine", o.machine}, {"patterns", o.patterns}, {"footprints", o.footprints},
            {"skip", o.skip}, {"reps", o.reps}, {"warmup", o.warmup}, {"min_reps", o.min_reps},
            {"target_permille", o.target_permille}, {"budget_ms", o.budget_ms}, {"vcpu_cpu", o.vcpu_cpu},
            {"migrate_ms", o.migrate_ms}, {"dirty_mask", o.dirty_mask}, {"mem_mib", o.mem_mib}, {"cell_timeout_s", o.cell_timeout.count()},
            {"image", o.image}, {"out", o.out}, {"inject", o.inject}, {"variant", o.variant}, {"events", o.events},
            {"pace", o.pace}, {"pace_footprint", o.pace_footprint}, {"pace_rounds", o.pace_rounds}, {"neighbour", o.neighbour}, {"slice_ms", o.slice_ms},
            {"neighbour_bytes", o.neighbour_bytes}};
}

RunOptions run_options_from_json(const json& j) {
    RunOptions o;
    o.backend = j.at("backend").get<std::string>();
    o.mode = j.at("mode").get<std::string>();
    o.vfio = j.value("vfio", "");
    o.vfio_baseline = j.value("vfio_baseline", "");
    o.vfio_pci = j.value("vfio_pci", std::vector<std::string>{});
    o.machine = j.value("machine", "microvm");
    o.patterns = j.at("patterns").get<std::string>();
    o.footprints = j.at("footprints").get<std::string>();
    o.skip = j.value("skip", "");
    o.reps = j.at("reps").get<uint32_t>();
    o.warmup = j.at("warmup").get<uint32_t>();
    // Journals written before adaptive repetitions ran every cell to `reps`.
    o.min_reps = j.value("min_reps", o.reps);
    o.target_permille = j.value("target_permille", 0u);
    o.budget_ms = j.value("budget_ms", 0u);
    o.vcpu_cpu = j.value("vcpu_cpu", -1);
    o.migrate_ms = j.value("migrate_ms", 0u);
    o.dirty_mask = j.value("dirty_mask", 0u);
    o.mem_mib = j.value("mem_mib", uint64_t{0});
    o.cell_timeout = std::chrono::seconds(j.value("cell_timeout_s", 10));
    o.image = j.value("image", "");
    o.out = j.value("out", "");
    o.inject = j.value("inject", "");
    o.variant = j.value("variant", "");
    o.events = j.value("events", RunOptions{}.events);
    o.pace = j.value("pace", "");
    o.pace_footprint = j.value("pace_footprint", RunOptions{}.pace_footprint);
    o.pace_rounds = j.value("pace_rounds", 0u);  // journals from before rounds ran the steps once
    o.neighbour = j.value("neighbour", "");
    o.slice_ms = j.value("slice_ms", RunOptions{}.slice_ms);
    o.neighbour_bytes = j.value("neighbour_bytes", uint64_t{0});
    return o;
}

namespace {

json base_context(const std::vector<Plan>& plans, const std::vector<RunOptions>& runs, const std::string& command_line) {
    const Plan& plan = plans.front();
    const RunOptions& o = runs.front();
    json recorded = json::array();
    for (size_t i = 0; i < runs.size(); ++i) {
        RunOptions r = runs[i];
        r.backend = plans[i].backend;  // "auto" resolved: a resumed run must use the same backend
        r.vcpu_cpu = plans[i].vcpu_cpu;
        recorded.push_back(to_json(r));
    }
    std::set<std::string> backends;
    bool emulated = false;
    for (const auto& p : plans) backends.insert(p.backend), emulated = emulated || p.emulated;
    json fbctx = {{"schema_version", kResultsSchemaVersion}, {"version", FLUSHBENCH_VERSION},
                  {"git_commit", FLUSHBENCH_GIT_COMMIT}, {"command_line", command_line},
                  {"backend", backends.size() == 1 ? *backends.begin() : fmt::format("{}", fmt::join(backends, ","))},
                  {"emulated", emulated}, {"kvm_flavour", kvm_flavour()}, {"host", host_fingerprint()},
                  {"guest_cmdline", plan.cmdline}, {"mode", o.mode}, {"machine", plan.backend == "kvm" ? "flushbench-vmm" : o.machine},
                  {"mem_bytes", plan.mem_bytes}, {"cell_timeout_s", o.cell_timeout.count()},
                  {"vcpu_cpu", o.vcpu_cpu}, {"migrate_ms", o.migrate_ms}, {"runs", recorded},
                  {"tsc_khz_source", "KVM_GET_TSC_KHZ on the vCPU (kvm) or on a scratch vCPU (qemu)"},
                  {"regime", host_regime()}, {"patterns", pattern_table_json()}};
    if (plan.vfio) fbctx["vfio"] = *plan.vfio;
    fbctx["vfio_baseline"] = plan.vfio_baseline ? json(*plan.vfio_baseline) : json(nullptr);
    if (emulated) fbctx["caveats"] = {"qemu-tcg: TCG treats WBINVD and CLFLUSH* as no-ops; timings are emulated, functional only"};
    if (!o.inject.empty()) fbctx["fault_injection"] = o.inject;
    return fbctx;
}

int start_runs(const std::vector<RunOptions>& runs, std::string out, const std::string& command_line, bool quiet, json extra) {
    std::vector<Plan> plans(runs.size());
    for (size_t i = 0; i < runs.size(); ++i)
        if (auto failed = checked_plan(runs[i], plans[i])) return *failed;
    json fbctx = base_context(plans, runs, command_line);
    fbctx.update(extra);
    if (out.empty()) {
        char host[256] = {};
        gethostname(host, sizeof host - 1);
        out = fmt::format("results/{}-{}.json", utc_stamp(), host);
    }
    std::unique_ptr<ResultsWriter> results;
    try {
        results = std::make_unique<ResultsWriter>(out, make_context(fbctx));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitEnvironment;
    }
    if (!quiet) fmt::print(stderr, "flushbench: journal {}\n", results->journal());
    return execute(plans, runs, *results, quiet);
}

}  // namespace

int run_benchmark(const RunOptions& o) { return start_runs({o}, o.out, o.command_line, o.quiet, json::object()); }

int run_matrix(const std::vector<RunOptions>& runs, const std::string& out, const std::string& command_line, bool quiet,
               const json& matrix) {
    if (runs.empty()) {
        fmt::print(stderr, "flushbench: the matrix expands to no runs\n");
        return kExitUsage;
    }
    return start_runs(runs, out, command_line, quiet, {{"matrix", matrix}});
}

int resume_benchmark(const std::string& journal, bool quiet) {
    std::unique_ptr<ResultsWriter> results;
    std::vector<RunOptions> runs;
    try {
        results = std::make_unique<ResultsWriter>(ResultsWriter::resume(journal));
        for (const auto& r : results->context().at("flushbench").at("runs")) runs.push_back(run_options_from_json(r));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: cannot resume {}: {}\n", journal, e.what());
        return kExitUsage;
    }
    std::vector<Plan> plans(runs.size());
    for (size_t i = 0; i < runs.size(); ++i) {
        runs[i].quiet = quiet;
        if (auto failed = checked_plan(runs[i], plans[i])) return *failed;
    }
    if (!quiet) fmt::print(stderr, "flushbench: resuming {} with {} cells already measured\n", results->out(), results->cells().size());
    return execute(plans, runs, *results, quiet);
}

}  // namespace fb
