// The kvm backend: our VMM (host/vmm), every snoop-control phase of a run inside one VM, the
// KVM-VFIO device changed between phases with the vCPU stopped.
#include <optional>

#include "host/counters/cell_counters.h"
#include "host/run/boot.h"
#include "host/run/signals.h"
#include "host/vmm/elf_image.h"
#include "host/vmm/snoop_control.h"
#include "host/vmm/vm.h"
#include "host/vmm/vmm_guest.h"

namespace fb {
using nlohmann::json;

namespace {

json stats_delta(const KvmStats& before, const KvmStats& after) {
    json d = json::object();
    for (const auto& [k, v] : after.values) {
        auto it = before.values.find(k);
        if (it != before.values.end() && v != it->second) d[k] = int64_t(v - it->second);
    }
    return d;
}

}  // namespace

// One boot on the built-in VMM. Records arrive with the vCPU stopped, so phase changes and KVM
// statistics snapshots happen between two guest instructions.
BootEnd boot_kvm(Boot& boot) {
    const Plan& plan = boot.plan;
    const RunOptions& o = boot.options;
    const std::vector<Phase>& phases = boot.phases;
    RecordStream& stream = boot.stream;
    ModeWitness& witness = boot.witness;
    json& boot_facts = boot.facts;
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
    } events(stream, boot.cell_extra);
    CellCounters counters(o.events);
    events.counters = &counters;

    ElfImage image = ElfImage::load(plan.image);
    VmmOptions vo;
    vo.mem_bytes = plan.mem_bytes;
    vo.cmdline = boot.cmdline;
    if (plan.vcpu_cpu >= 0) vo.cpu = plan.vcpu_cpu;
    vo.migrate_every_ms = std::chrono::milliseconds(o.migrate_ms);
    vo.hop_cpus = plan.hop_cpus;
    VmmGuest guest(image, vo, events);
    events.guest = &guest;
    SnoopControl snoop(guest.vm(), plan.vfio_attachment, plan.baseline_attachment);
    boot_facts["kvm_vfio_device"] = snoop.device_created() ? "created" : "unsupported";
    if (uint64_t khz = vcpu_tsc_khz(guest.vcpu().fd())) boot.tsc_khz = khz;
    boot_facts["tsc_khz"] = boot.tsc_khz;
    auto stats = guest.kvm_stats();
    if (!stats.vcpu.unavailable.empty()) boot_facts["kvm_stats_unavailable"] = stats.vcpu.unavailable;

    // The phase's window opens before its KVM-VFIO change, so the change is counted in it.
    stream.on_phase([&](uint32_t index) {
        if (index >= phases.size()) return;
        const PhaseEvidence& ev = witness.begin(index, phases[index].label, phases[index].mode, [&] {
            snoop.enter(phases[index].mode == to_string(Mode::noncoherent));
            return snoop.attached();
        });
        if (ev.judgement.verdict == Verdict::contradicted) boot.contradicted(contradiction_message(ev));
    });
    VmmOutcome out;
    {
        CurrentGuest current(guest);
        out = guest.run(o.cell_timeout);
    }
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

}  // namespace fb
