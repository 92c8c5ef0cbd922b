// VM-exit reason names, as KVM's kvm_exit tracepoint reports them.
//
// The tracepoint carries a raw number and an `isa` field saying whose numbering it is: VMX basic exit
// reasons (Intel SDM Vol. 3 Appendix C; bits 15:0 of the exit reason, bit 31 = VM-entry failure) or
// SVM exit codes (AMD APM Vol. 2 Appendix C, the VMCB EXITCODE). The same number means different
// things: 0x30 is EPT_VIOLATION on VMX and WRITE_DR0 on SVM, so a decoder without `isa` is wrong.
// Names are the kernel's EXIT_REASON_* / SVM_EXIT_* macro suffixes (arch/x86/include/uapi/asm/vmx.h,
// svm.h): what a KVM developer greps for.
#pragma once

#include <cstdint>
#include <string>

namespace fb {

// The kvm_exit tracepoint's `isa` field: KVM_ISA_VMX = 1, KVM_ISA_SVM = 2 (arch/x86/kvm/trace.h).
enum class Isa { vmx, svm, unknown };

Isa isa_from_tracepoint(uint64_t isa_field);
const char* to_string(Isa isa);

// "WBINVD" for (vmx, 54) and (svm, 0x89); "UNKNOWN(n)" for numbers neither table has (n in decimal
// for VMX, hex for SVM, as the manuals write them). A VMX reason with bit 31 set (VM-entry failed)
// gets "|FAILED_VMENTRY" appended to its basic reason.
std::string exit_reason_name(Isa isa, uint64_t reason);

// The KVM module behind /dev/kvm, for a kvm_exit format without an isa field (old kernels):
// kvm_intel -> vmx, kvm_amd -> svm, anything else -> unknown.
Isa host_kvm_isa(const std::string& sysfs_root = "/sys");

}  // namespace fb
