#include "host/run/options.h"

#include <array>
#include <stdexcept>
#include <type_traits>

#include <fmt/format.h>

#include "common/config.h"

namespace fb {
using nlohmann::json;

namespace {

constexpr std::array kBackends = {Backend::automatic, Backend::kvm, Backend::qemu_kvm, Backend::qemu_tcg, Backend::native};
constexpr std::array kBackendNames = {"auto", "kvm", "qemu-kvm", "qemu-tcg", "native"};
constexpr std::array kModes = {Mode::coherent, Mode::noncoherent, Mode::both};
constexpr std::array kModeNames = {"coherent", "noncoherent", "both"};

using R = RunOptions;
using S = RunOption::Scale;
constexpr double kMaxReps = Config::kMaxReps;

// Every `flushbench run` option, in --help order.
const RunOption kTable[] = {
    {"--backend", "backend", &R::backend, "auto (kvm if /dev/kvm works, else qemu-tcg), kvm, qemu-kvm, qemu-tcg, native (host user space)",
     0, 0, S::none, true},
    {"--mode", "mode", &R::mode, "coherent, noncoherent (needs --vfio or --vfio-pci), both (A/B/A in one VM on kvm)", 0, 0, S::none, true},
    {"--vfio", "vfio", &R::vfio, "VFIO group (/dev/vfio/N) or device cdev (/dev/vfio/devices/vfioX) without snoop control"},
    {"--vfio-baseline", "vfio_baseline", &R::vfio_baseline, "a coherent VFIO file attached during the coherent phases"},
    {"--vfio-pci", "vfio_pci", &R::vfio_pci, "qemu backends: PCI device (BDF) to pass through, in the noncoherent boot only"},
    {"--machine", "machine", &R::machine, "qemu backends: microvm (PVH, fast), pc or q35 (Multiboot)", 0, 0, S::none, false, false, false,
     "microvm,pc,q35"},
    {"--patterns", "patterns", &R::patterns, "comma list of patterns, or all (see `flushbench patterns`)", 0, 0, S::none, true},
    {"--footprints", "footprints", &R::footprints, "comma list: bytes with K/M/G, or NxLLC", 0, 0, S::none, true},
    {"--reps", "reps", &R::reps, "the most measured repetitions a cell runs", 1, kMaxReps, S::none, true},
    {"--min-reps", "min_reps", &R::min_reps, "the fewest measured repetitions a cell runs", 1, kMaxReps},
    {"--target-pct", "target_permille", &R::target_permille,
     "a cell stops once the 95% interval of its median is this narrow, in percent of the median (0: never)", 0, 100,
     S::permille_as_percent},
    {"--budget-ms", "budget_ms", &R::budget_ms, "a cell stops after this much measuring (0: no budget; at least --min-reps)", 0,
     Config::kMaxBudgetMs},
    {"--warmup", "warmup", &R::warmup, "discarded repetitions per cell", 0, Config::kMaxWarmup, S::none, true},
    {"--skip", "skip", &R::skip, "patterns never to run, as name[:reason],..."},
    {"--events", "events", &R::events, "kvm backend: host counters per cell, split guest-only/host-only (libpfm4 names)"},
    {"--vcpu-cpu", "vcpu_cpu", &R::vcpu_cpu, "pin the vCPU (kvm) or QEMU (qemu-*) to this host CPU"},
    {"--migrate-ms", "migrate_ms", &R::migrate_ms,
     "kvm: move the vCPU to the next CPU this often; KVM's wbinvd_dirty_mask only grows when a move falls between two WBINVDs, so "
     "this rarely widens a flush: use --dirty-mask for that"},
    {"--dirty-mask", "dirty_mask", &R::dirty_mask,
     "kvm: widths like 1,2,4: one run per width K, the vCPU made to run on K pCPUs before each WBINVD, so a non-coherent WBINVD "
     "flushes K CPUs",
     0, Config::kMaxMaskWidth, S::none, false, false, true},
    {"--mem-mib", "mem_mib", &R::mem_mib, "guest RAM; default: sized to the largest footprint"},
    {"--cell-timeout", "cell_timeout_s", &R::cell_timeout, "seconds of guest silence before a cell is declared hung", 1, 3600},
    {"--image", "image", &R::image, "guest kernel ELF (default: the one built with this flushbench)"},
    {"--out", "out", &R::out, "results file (default results/<UTC-time>-<host>.json)"},
    {"--pace", "pace", &R::pace, "paced guest steps after the cells: idle:MS, PATTERN@RATE:MS (RATE per second, or max)"},
    {"--pace-footprint", "pace_footprint", &R::pace_footprint, "bytes each paced operation dirties first"},
    {"--pace-rounds", "pace_rounds", &R::pace_rounds,
     "run the paced steps in this many rounds, each shuffled, with an idle step on either side of every active one (0: once, as "
     "listed; a neighbour run defaults to 3)",
     0, Config::kMaxPaceRounds},
    {"--neighbour", "neighbour", &R::neighbour,
     "host neighbour on CPU N (or auto): cache probe in time slices, compared across the paced steps; implies --patterns none and the "
     "default --pace unless given"},
    {"--slice-ms", "slice_ms", &R::slice_ms, "neighbour time slice", 2, 1000},
    {"--neighbour-bytes", "neighbour_bytes", &R::neighbour_bytes, "neighbour buffer (default: half the LLC)"},
    {"--inject", "inject", &R::inject, "guest misbehaves at a cell: hang@N, triple_fault@N, flood@N, panic@N", 0, 0, S::none, false, true},
    {nullptr, "variant", &R::variant, "appended to mode labels: a matrix placement's name"},
};

template <typename E, size_t N>
std::optional<E> from_name(std::string_view s, const std::array<E, N>& values, const std::array<const char*, N>& names) {
    for (size_t i = 0; i < N; ++i)
        if (s == names[i]) return values[i];
    return std::nullopt;
}

// A member's value as JSON (target_permille stays permille: the journal's unit).
json value_json(const RunOptions& o, const OptionMember& m) {
    return std::visit(
        [&](auto ptr) -> json {
            const auto& v = o.*ptr;
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::chrono::seconds>) return v.count();
            else if constexpr (std::is_same_v<T, Backend> || std::is_same_v<T, Mode>) return std::string(to_string(v));
            else return v;
        },
        m);
}

void set_from_json(RunOptions& o, const RunOption& row, const json& v) {
    std::visit(
        [&](auto ptr) {
            auto& field = o.*ptr;
            using T = std::decay_t<decltype(field)>;
            if constexpr (std::is_same_v<T, std::chrono::seconds>) field = std::chrono::seconds(v.get<int64_t>());
            else if constexpr (std::is_same_v<T, Backend>) {
                auto b = backend_from_string(v.get<std::string>());
                if (!b) throw std::runtime_error(fmt::format("unknown backend '{}'", v.get<std::string>()));
                field = *b;
            } else if constexpr (std::is_same_v<T, Mode>) {
                auto m = mode_from_string(v.get<std::string>());
                if (!m) throw std::runtime_error(fmt::format("unknown mode '{}'", v.get<std::string>()));
                field = *m;
            } else field = v.get<T>();
        },
        row.member);
}

// The value as a command-line word (target_permille back in percent).
std::string value_arg(const RunOptions& o, const RunOption& row) {
    if (row.scale == S::permille_as_percent) return fmt::format("{:g}", o.*std::get<uint32_t RunOptions::*>(row.member) / 10.0);
    json v = value_json(o, row.member);
    return v.is_string() ? v.get<std::string>() : v.dump();
}

}  // namespace

std::string_view to_string(Backend b) { return kBackendNames[size_t(b)]; }
std::string_view to_string(Mode m) { return kModeNames[size_t(m)]; }
std::optional<Backend> backend_from_string(std::string_view s) { return from_name(s, kBackends, kBackendNames); }
std::optional<Mode> mode_from_string(std::string_view s) { return from_name(s, kModes, kModeNames); }
std::span<const Backend> all_backends() { return kBackends; }
std::span<const Mode> all_modes() { return kModes; }
std::vector<std::string> backend_names() { return {kBackendNames.begin(), kBackendNames.end()}; }
std::vector<std::string> mode_names() { return {kModeNames.begin(), kModeNames.end()}; }

std::span<const RunOption> run_option_table() { return kTable; }

const RunOption* find_run_option(std::string_view flag) {
    for (const auto& row : kTable)
        if (row.flag && flag == row.flag) return &row;
    return nullptr;
}

json to_json(const RunOptions& o) {
    json j = json::object();
    for (const auto& row : kTable) j[row.key] = value_json(o, row.member);
    return j;
}

RunOptions run_options_from_json(const json& j) {
    RunOptions o;
    // Journals from before adaptive repetitions ran every cell to `reps`, and from before rounds ran
    // the paced steps once: absent, these keep that behaviour rather than today's defaults.
    o.target_permille = 0, o.budget_ms = 0, o.pace_rounds = 0;
    for (const auto& row : kTable) {
        auto it = j.find(row.key);
        if (it == j.end() || it->is_null()) {
            if (row.required) throw std::runtime_error(fmt::format("the journal's run options lack '{}'", row.key));
            continue;
        }
        try {
            set_from_json(o, row, *it);
        } catch (const std::exception& e) {
            throw std::runtime_error(fmt::format("the journal's run option '{}' is unreadable: {}", row.key, e.what()));
        }
    }
    if (!j.contains("min_reps")) o.min_reps = o.reps;
    return o;
}

std::vector<std::string> run_option_args(const RunOptions& o) {
    static const RunOptions defaults;
    // Always written: what the run measures and how a cell stops, so a line reads on its own.
    auto always = [](const RunOption& row) {
        return row.required || std::string_view(row.key) == "min_reps" || std::string_view(row.key) == "target_permille" ||
               std::string_view(row.key) == "budget_ms" || std::string_view(row.key) == "cell_timeout_s";
    };
    std::vector<std::string> args;
    for (const auto& row : kTable) {
        if (!row.flag || row.hidden || std::string_view(row.key) == "out") continue;
        if (!always(row) && value_json(o, row.member) == value_json(defaults, row.member)) continue;
        if (std::string_view(row.key) == "machine" && o.backend == Backend::kvm) continue;  // our VMM has one machine
        if (auto list = std::get_if<std::vector<std::string> RunOptions::*>(&row.member)) {
            for (const auto& item : o.**list) args.insert(args.end(), {row.flag, item});
            continue;
        }
        args.insert(args.end(), {row.flag, value_arg(o, row)});
    }
    return args;
}

}  // namespace fb
