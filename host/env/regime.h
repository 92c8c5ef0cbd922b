// Which regime this host is in for the two side effects of losing IOMMU snoop control, from probe
// facts (KVM flavour, CPU vendor, self-snoop, KVM's quirks, the VFIO files present):
//
// - WBINVD: with only coherent VFIO files (or none) KVM traps a guest WBINVD and skips it; with a
//   non-coherent file attached (an IOMMU without snoop control, or an mdev) it executes WBINVD on
//   every pCPU in the vCPU's wbinvd_dirty_mask, by IPI, and waits for them.
// - Memory types: with snoop control, KVM on Intel (EPT) ignores the guest's PAT and maps guest
//   memory write-back (unless the VMM disables KVM_X86_QUIRK_IGNORE_GUEST_PAT, on CPUs with
//   self-snoop); with non-coherent DMA it honours the guest's PAT and MTRRs. AMD NPT always
//   honours the guest's PAT. Other KVMs (shadow paging, kvm_pvm) are not covered by either rule:
//   the memtype cells decide.
//
// The same JSON goes into `flushbench probe --json` and into every results file, so a plot can say
// what it should show and the measured costs can confirm it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "host/env/probe.h"

namespace fb {

// {"wbinvd": {coherent, noncoherent, noncoherent_reachable, files, how}, "memtype": {vendor, flavour,
//   self_snoop, ignore_guest_pat_quirk, coherent, noncoherent, expected, reason},
//  "kernel": kernel_regime(uname release)}. noncoherent_reachable is true only when a VFIO file
// sysfs calls non-coherent was opened, put in its container and not called coherent by it.
nlohmann::json host_regime(const ProbeOptions& opts = {});

// What this kernel version means for the measurement: how KVM asks a VFIO group's coherency
// (container before 6.2, devices after), whether any VFIO file starts device-assignment mode
// (before 6.17), and when KVM_X86_QUIRK_IGNORE_GUEST_PAT appeared (6.16, backported to 6.12.y).
nlohmann::json kernel_regime(const std::string& release);

// The probe's "regime" lines, indented under a heading.
std::string format_regime(const nlohmann::json& regime);

}  // namespace fb
