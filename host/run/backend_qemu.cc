// The qemu-kvm and qemu-tcg backends: QEMU runs the guest, one boot per snoop-control mode.
#include "host/qemu/qemu_guest.h"
#include "host/run/boot.h"
#include "host/run/signals.h"

namespace fb {

// One boot per mode: the non-coherent devices only in the noncoherent boot (QEMU adds every
// passed-through device to its KVM-VFIO device for the VM's whole life), the baseline in every boot.
BootEnd boot_qemu(Boot& boot) {
    const Plan& plan = boot.plan;
    const RunOptions& o = boot.options;
    const Phase& phase = boot.phases.front();
    RecordStream& stream = boot.stream;
    ModeWitness& witness = boot.witness;
    QemuOptions qo;
    qo.image = plan.image;
    qo.machine = o.machine;
    qo.kvm = plan.backend == Backend::qemu_kvm;
    qo.mem_mib = plan.mem_bytes >> 20;
    qo.cmdline = boot.cmdline;
    qo.vfio_pci = plan.qemu_baseline;
    std::vector<AttachedFile> attached;
    // QEMU owns the containers: only kprobes can tell what KVM made of the devices.
    KernelCoherency qemus{Coherency::unknown, "", "QEMU opened it in its own container"};
    for (const auto& bdf : plan.qemu_baseline) attached.push_back({bdf, "baseline", qemus});
    if (phase.mode == to_string(Mode::noncoherent))
        for (const auto& bdf : o.vfio_pci) qo.vfio_pci.push_back(bdf), attached.push_back({bdf, "noncoherent", qemus});
    qo.pin_cpu = plan.vcpu_cpu;
    QemuGuest q(qo);
    boot.facts["qemu_argv"] = q.argv();
    // The window opens before QEMU starts: it adds its devices to KVM before the guest runs.
    witness.begin(0, phase.label, phase.mode, [&] { return attached; });
    stream.on_phase([&](uint32_t) {
        const PhaseEvidence& ev = witness.recheck();
        if (ev.judgement.verdict == Verdict::contradicted) boot.contradicted(contradiction_message(ev));
    });
    auto silence = std::chrono::duration_cast<std::chrono::milliseconds>(o.cell_timeout);
    QemuOutcome out;
    {
        CurrentGuest current(q);
        out = q.run([&](std::string_view b) { stream.feed_bytes(b); }, [&](std::chrono::milliseconds silent) { return silent > silence; });
    }
    boot.facts["first_output_us"] = out.first_output.count();
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

}  // namespace fb
