#include "host/run/plan.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "common/cell_plan.h"
#include "common/x86/cpu.h"
#include "host/counters/perf_counters.h"
#include "host/exit_status.h"
#include "host/neighbour/neighbour.h"
#include "host/qemu/qemu_guest.h"
#include "host/run/native.h"
#include "host/sys/cpus.h"
#include "host/sys/kvm.h"
#include "host/vmm/elf_image.h"
#include "host/vmm/vm.h"

namespace fb {
namespace fs = std::filesystem;

namespace {

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

bool kvm_usable(std::string& why) {
    KvmOpen k = open_kvm();
    if (!k.fd) why = fmt::format("{} ({})", k.why, k.fix);
    return bool(k.fd);
}

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

Config guest_config(const RunOptions& o) {
    std::string s = fmt::format("patterns={} footprints={} reps={} warmup={} min_reps={} target={} budget_ms={}", o.patterns,
                                o.footprints, o.reps, o.warmup, o.min_reps, o.target_permille, o.budget_ms);
    if (!o.skip.empty()) s += " skip=" + o.skip;
    if (!o.pace.empty()) s += fmt::format(" pace={} pace_footprint={} pace_rounds={}", o.pace, o.pace_footprint, o.pace_rounds);
    if (o.dirty_mask > 1) s += fmt::format(" mask_width={}", o.dirty_mask);
    if (!o.inject.empty()) s += " inject=" + o.inject;
    Config c;
    ConfigError err = parse_config(Str(s.c_str()), c);
    if (err.message) throw UsageError(fmt::format("{}: '{}'", err.message, std::string(err.token.p, err.token.n)));
    return c;
}

std::string config_line(const Config& c) {
    char buf[4096];
    FixedWriter w(buf, sizeof buf);
    format_config(c, w);
    if (w.overflowed()) throw UsageError("the guest configuration is longer than 4096 characters: fewer patterns, footprints or pace steps");
    return std::string(buf, w.size());
}

namespace {

std::vector<Phase> phases_for(Mode mode, const std::string& variant) {
    const std::string coherent(to_string(Mode::coherent)), noncoherent(to_string(Mode::noncoherent));
    std::vector<Phase> p;
    if (mode == Mode::coherent) p = {{coherent, coherent}};
    else if (mode == Mode::noncoherent) p = {{noncoherent, noncoherent}};
    // A/B/A: the repeat shows whether the first phase's numbers held (drift, warm-up).
    else p = {{coherent, coherent}, {noncoherent, noncoherent}, {coherent, coherent + "-repeat"}};
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

}  // namespace

Plan make_plan(const RunOptions& o) {
    Plan plan;
    // Backend.
    std::string kvm_why;
    bool have_kvm = kvm_usable(kvm_why);
    plan.backend = o.backend;
    if (plan.backend == Backend::native) {  // host user space: flushbench-native over the same table
        if (!o.pace.empty() || !o.neighbour.empty())
            throw UsageError("--pace and --neighbour need a guest: use --backend kvm, qemu-kvm or qemu-tcg");
        plan.config = guest_config(o);
        plan.cmdline = config_line(plan.config);
        if (::access(default_native_binary().c_str(), X_OK) != 0)
            throw EnvironmentError(fmt::format("{} not found: build it with `cmake --build build`", default_native_binary()));
        plan.boots = {{{"native", "native"}}};
        return plan;
    }
    if (plan.backend == Backend::automatic) {
        plan.backend = have_kvm ? Backend::kvm : Backend::qemu_tcg;
        if (!have_kvm) fmt::print(stderr, "warning: {}; falling back to qemu-tcg, whose timings are emulated\n", kvm_why);
    }
    if (plan.backend != Backend::qemu_tcg && !have_kvm)
        throw EnvironmentError(fmt::format("backend {} needs KVM: {}", to_string(plan.backend), kvm_why));
    if (plan.backend != Backend::kvm && QemuGuest::which("qemu-system-x86_64").empty())
        throw EnvironmentError("qemu-system-x86_64 not found: install it with `apt-get install qemu-system-x86`");
    plan.emulated = plan.backend == Backend::qemu_tcg;
    if (o.migrate_ms && plan.backend != Backend::kvm) throw UsageError("--migrate-ms needs --backend kvm (QEMU's vCPU threads are its own)");

    // The guest's configuration, checked with the guest's own parser.
    plan.config = guest_config(o);
    plan.cmdline = config_line(plan.config);
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
    bool kvm = plan.backend == Backend::kvm;
    bool wants_nc = o.mode != Mode::coherent;
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
    if (wants_nc && kvm && !plan.vfio) throw EnvironmentError(fmt::format("--mode {} needs --vfio FILE. {}", to_string(o.mode), kSnoopControlHelp));
    if (wants_nc && !kvm && o.vfio_pci.empty())
        throw EnvironmentError(fmt::format("--mode {} on {} needs --vfio-pci BDF of a device without snoop control. {}", to_string(o.mode),
                                           to_string(plan.backend), kSnoopControlHelp));

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
    if (plan.backend == Backend::kvm) plan.boots.push_back(phases);
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
    plan.tsc_khz = plan.backend == Backend::kvm ? 0 : kvm_default_tsc_khz();
    return std::nullopt;
}

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

}  // namespace fb
