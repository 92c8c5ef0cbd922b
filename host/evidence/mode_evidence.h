// A mode label is a claim: "noncoherent" says KVM executed the guest's WBINVDs for real, "coherent"
// says it skipped them. This file turns what the kernel itself reports into a verdict on that
// claim, per phase and per cell:
//
// - the VFIO files attached to the VM and the kernel's answer about each (the container's
//   VFIO_DMA_CC_IOMMU, or iommufd's view of the IOMMU registers), from host/vfio_attachment.h;
// - where kprobes can be created (root), KVM's own actions (host/kernel_probes.h): whether it
//   registered non-coherent DMA for this VM, and how many CPUs it flushed per WBINVD exit.
//
// confirmed: every source that answered agrees with the label, and at least one answered.
// contradicted: a source disagrees; the run must stop rather than write the label.
// unverified: nothing answered (no kprobes, no kernel answer for the file); shown as a caveat.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/counters/kernel_probes.h"
#include "host/vfio/vfio_attachment.h"

namespace fb {

enum class Verdict { confirmed, contradicted, unverified };
const char* to_string(Verdict v);

// A VFIO file attached to the VM during a phase. role: "noncoherent" (the --vfio file, or the device
// passed to QEMU in the noncoherent boot) or "baseline" (a coherent file kept attached throughout).
struct AttachedFile {
    std::string path;
    std::string role;
    KernelCoherency kernel;  // says unknown when only QEMU knows (it owns the container)
};

// What KVM did, from kprobes: its registration state for this VM and the phase's WBINVD work.
struct KvmObservation {
    bool registered = false;
    uint64_t wbinvd_exits = 0, flushes = 0;
};

struct Judgement {
    Verdict verdict = Verdict::unverified;
    std::string source;   // "kprobes+vfio-container", "no-vfio-file", ...; empty when unverified
    std::string summary;  // one line: what the kernel said
};

// The rules above, for a phase that claims `mode` ("coherent" or "noncoherent").
Judgement judge(const std::string& mode, const std::vector<AttachedFile>& attached, const std::optional<KvmObservation>& kvm,
                const std::string& kvm_unavailable);

struct PhaseEvidence {
    uint32_t run = 0, boot = 0, phase = 0;
    std::string label, mode;  // label as the results name it ("coherent-repeat+mask2"); mode: coherent|noncoherent
    int64_t start_ns = 0, end_ns = 0;  // CLOCK_MONOTONIC
    std::vector<AttachedFile> attached;
    std::optional<CoherencyCounts> counts;  // over the phase; nullopt without kprobes
    bool registered = false;                // KVM's state during the phase (with kprobes)
    std::string kprobes;                    // why there are no counts
    Judgement judgement;
};
nlohmann::json to_json(const PhaseEvidence& p);

// The evidence of one boot, phase by phase and cell by cell. Counts are cumulative from open(), so
// open it before the VM's first KVM-VFIO change (and, on the kvm backend, before the vCPU thread).
class ModeWitness {
public:
    ModeWitness(CoherencyProbes probes, uint32_t run, uint32_t boot) : probes_(std::move(probes)), run_(run), boot_(boot) {}

    // A phase begins: its window opens, `attach` makes its KVM-VFIO changes and returns what is
    // attached now, then the phase is judged on KVM's registration state; contradicted means
    // stop before any cell.
    const PhaseEvidence& begin(uint32_t phase, const std::string& label, const std::string& mode,
                               const std::function<std::vector<AttachedFile>()>& attach);
    // Re-judges the open phase now (QEMU attaches its devices after the boot began).
    const PhaseEvidence& recheck();
    void end();  // closes the open phase, if any: final counts and judgement

    // Around one cell of the open phase: its own WBINVD exits and flushes. cell_end() returns the
    // cell's mode_evidence; its verdict is contradicted when the cell's exits flushed nothing in a
    // noncoherent phase (or flushed in a coherent one while KVM had nothing registered).
    void cell_begin();
    nlohmann::json cell_end();

    const std::vector<PhaseEvidence>& phases() const { return phases_; }
    bool probes_available() const { return probes_.available(); }
    nlohmann::json describe_probes() const { return probes_.describe(); }

private:
    std::optional<KvmObservation> observe(const CoherencyCounts& since) const;
    void judge_open();

    CoherencyProbes probes_;
    uint32_t run_, boot_;
    std::vector<PhaseEvidence> phases_;
    bool open_ = false;
    CoherencyCounts at_phase_start_, at_cell_start_;
};

// The line a contradicted phase stops the run with: what the kernel did and the fix.
std::string contradiction_message(const PhaseEvidence& p);

}  // namespace fb
