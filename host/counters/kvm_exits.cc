#include "host/counters/kvm_exits.h"

#include <filesystem>
#include <string_view>

#include <fmt/format.h>

namespace fb {
namespace {

struct Name {
    uint64_t code;
    const char* name;
};

// VMX basic exit reasons. Numbers and names from arch/x86/include/uapi/asm/vmx.h and the VMX table
// of a 6.18 kernel's kvm_exit format (tests/data/tracepoints/kvm_pvm-6.18); 5, 6, 11 and 17 from the
// SDM (KVM never sees them: SMIs go to SMM, GETSEC/RSM are not intercepted in practice).
constexpr Name kVmx[] = {
    {0, "EXCEPTION_NMI"},
    {1, "EXTERNAL_INTERRUPT"},
    {2, "TRIPLE_FAULT"},
    {3, "INIT_SIGNAL"},
    {4, "SIPI_SIGNAL"},
    {5, "IO_SMI"},
    {6, "OTHER_SMI"},
    {7, "INTERRUPT_WINDOW"},  // older kernels: PENDING_INTERRUPT
    {8, "NMI_WINDOW"},
    {9, "TASK_SWITCH"},
    {10, "CPUID"},
    {11, "GETSEC"},
    {12, "HLT"},
    {13, "INVD"},
    {14, "INVLPG"},
    {15, "RDPMC"},
    {16, "RDTSC"},
    {17, "RSM"},
    {18, "VMCALL"},
    {19, "VMCLEAR"},
    {20, "VMLAUNCH"},
    {21, "VMPTRLD"},
    {22, "VMPTRST"},
    {23, "VMREAD"},
    {24, "VMRESUME"},
    {25, "VMWRITE"},
    {26, "VMOFF"},
    {27, "VMON"},
    {28, "CR_ACCESS"},
    {29, "DR_ACCESS"},
    {30, "IO_INSTRUCTION"},
    {31, "MSR_READ"},
    {32, "MSR_WRITE"},
    {33, "INVALID_STATE"},
    {34, "MSR_LOAD_FAIL"},
    {36, "MWAIT_INSTRUCTION"},
    {37, "MONITOR_TRAP_FLAG"},
    {39, "MONITOR_INSTRUCTION"},
    {40, "PAUSE_INSTRUCTION"},
    {41, "MCE_DURING_VMENTRY"},
    {43, "TPR_BELOW_THRESHOLD"},
    {44, "APIC_ACCESS"},
    {45, "EOI_INDUCED"},
    {46, "GDTR_IDTR"},
    {47, "LDTR_TR"},
    {48, "EPT_VIOLATION"},
    {49, "EPT_MISCONFIG"},
    {50, "INVEPT"},
    {51, "RDTSCP"},
    {52, "PREEMPTION_TIMER"},
    {53, "INVVPID"},
    {54, "WBINVD"},  // also WBNOINVD: KVM always intercepts both
    {55, "XSETBV"},
    {56, "APIC_WRITE"},
    {57, "RDRAND"},
    {58, "INVPCID"},
    {59, "VMFUNC"},
    {60, "ENCLS"},
    {61, "RDSEED"},
    {62, "PML_FULL"},
    {63, "XSAVES"},
    {64, "XRSTORS"},
    {67, "UMWAIT"},
    {68, "TPAUSE"},
    {74, "BUS_LOCK"},
    {75, "NOTIFY"},
    {77, "TDCALL"},
    {84, "MSR_READ_IMM"},
    {85, "MSR_WRITE_IMM"},
};

// SVM exit codes, from arch/x86/include/uapi/asm/svm.h and the SVM table of the 6.18 kvm_exit format.
// 0x40..0x5f (exceptions) and 0x90..0x9f (CRn write traps) are ranges, decoded in code below.
constexpr Name kSvm[] = {
    {0x000, "READ_CR0"},
    {0x002, "READ_CR2"},
    {0x003, "READ_CR3"},
    {0x004, "READ_CR4"},
    {0x008, "READ_CR8"},
    {0x010, "WRITE_CR0"},
    {0x012, "WRITE_CR2"},
    {0x013, "WRITE_CR3"},
    {0x014, "WRITE_CR4"},
    {0x018, "WRITE_CR8"},
    {0x020, "READ_DR0"},
    {0x021, "READ_DR1"},
    {0x022, "READ_DR2"},
    {0x023, "READ_DR3"},
    {0x024, "READ_DR4"},
    {0x025, "READ_DR5"},
    {0x026, "READ_DR6"},
    {0x027, "READ_DR7"},
    {0x030, "WRITE_DR0"},
    {0x031, "WRITE_DR1"},
    {0x032, "WRITE_DR2"},
    {0x033, "WRITE_DR3"},
    {0x034, "WRITE_DR4"},
    {0x035, "WRITE_DR5"},
    {0x036, "WRITE_DR6"},
    {0x037, "WRITE_DR7"},
    {0x060, "INTR"},
    {0x061, "NMI"},
    {0x062, "SMI"},
    {0x063, "INIT"},
    {0x064, "VINTR"},
    {0x065, "CR0_SEL_WRITE"},
    {0x066, "IDTR_READ"},
    {0x067, "GDTR_READ"},
    {0x068, "LDTR_READ"},
    {0x069, "TR_READ"},
    {0x06a, "IDTR_WRITE"},
    {0x06b, "GDTR_WRITE"},
    {0x06c, "LDTR_WRITE"},
    {0x06d, "TR_WRITE"},
    {0x06e, "RDTSC"},
    {0x06f, "RDPMC"},
    {0x070, "PUSHF"},
    {0x071, "POPF"},
    {0x072, "CPUID"},
    {0x073, "RSM"},
    {0x074, "IRET"},
    {0x075, "SWINT"},
    {0x076, "INVD"},
    {0x077, "PAUSE"},
    {0x078, "HLT"},
    {0x079, "INVLPG"},
    {0x07a, "INVLPGA"},
    {0x07b, "IOIO"},
    {0x07c, "MSR"},
    {0x07d, "TASK_SWITCH"},
    {0x07e, "FERR_FREEZE"},
    {0x07f, "SHUTDOWN"},
    {0x080, "VMRUN"},
    {0x081, "VMMCALL"},
    {0x082, "VMLOAD"},
    {0x083, "VMSAVE"},
    {0x084, "STGI"},
    {0x085, "CLGI"},
    {0x086, "SKINIT"},
    {0x087, "RDTSCP"},
    {0x088, "ICEBP"},
    {0x089, "WBINVD"},  // also WBNOINVD: KVM always intercepts both
    {0x08a, "MONITOR"},
    {0x08b, "MWAIT"},
    {0x08c, "MWAIT_COND"},
    {0x08d, "XSETBV"},
    {0x08e, "RDPRU"},
    {0x08f, "EFER_WRITE_TRAP"},
    {0x0a2, "INVPCID"},
    {0x0a5, "BUS_LOCK"},
    {0x0a6, "IDLE_HLT"},
    {0x400, "NPF"},
    {0x401, "AVIC_INCOMPLETE_IPI"},
    {0x402, "AVIC_UNACCELERATED_ACCESS"},
    {0x403, "VMGEXIT"},
    // SEV-ES software-defined VMGEXIT events, reported through the same field.
    {0x80000001, "VMGEXIT_MMIO_READ"},
    {0x80000002, "VMGEXIT_MMIO_WRITE"},
    {0x80000003, "VMGEXIT_NMI_COMPLETE"},
    {0x80000004, "VMGEXIT_AP_HLT_LOOP"},
    {0x80000005, "VMGEXIT_AP_JUMP_TABLE"},
    {0x80000010, "VMGEXIT_PSC"},  // SEV-SNP page state change
    {0x80000011, "VMGEXIT_GUEST_REQUEST"},
    {0x80000012, "VMGEXIT_EXT_GUEST_REQUEST"},
    {0x80000013, "VMGEXIT_AP_CREATION"},
    {0x8000fffd, "VMGEXIT_HYPERVISOR_FEATURES"},
};

// Exception vector mnemonics for SVM's per-vector intercepts (SVM_EXIT_EXCP_BASE + vector).
constexpr const char* kVectors[32] = {"DE", "DB", "NMI", "BP", "OF",    "BR", "UD", "NM", "DF", nullptr, "TS",
                                      "NP", "SS", "GP",  "PF", nullptr, "MF", "AC", "MC", "XM", "VE",    "CP"};

const char* find(const Name* table, size_t n, uint64_t code) {
    for (size_t i = 0; i < n; ++i)
        if (table[i].code == code) return table[i].name;
    return nullptr;
}

std::string svm_name(uint64_t code) {
    if (code >= 0x40 && code <= 0x5f) {
        uint64_t v = code - 0x40;
        return kVectors[v] ? fmt::format("EXCP_{}", kVectors[v]) : fmt::format("EXCP_{}", v);
    }
    if (code >= 0x90 && code <= 0x9f) return fmt::format("CR{}_WRITE_TRAP", code - 0x90);
    // SVM_EXIT_ERR is -1: all ones in the tracepoint's 32-bit field, or sign-extended.
    if (code == 0xffffffffu || code == ~uint64_t{0}) return "ERR";
    if (const char* n = find(kSvm, std::size(kSvm), code)) return n;
    return fmt::format("UNKNOWN({:#x})", code);
}

std::string vmx_name(uint64_t reason) {
    constexpr uint64_t kFailedVmentry = 0x80000000u;  // VMX_EXIT_REASONS_FAILED_VMENTRY
    uint64_t basic = reason & 0xffff;
    const char* n = find(kVmx, std::size(kVmx), basic);
    // Bits 30:16 other than 31 (e.g. bit 27 "enclave mode") carry no reason of their own.
    std::string s = n ? n : fmt::format("UNKNOWN({})", basic);
    if ((reason & kFailedVmentry) != 0) s += "|FAILED_VMENTRY";
    return s;
}

}  // namespace

Isa isa_from_tracepoint(uint64_t isa_field) {
    switch (isa_field) {
        case 1:
            return Isa::vmx;
        case 2:
            return Isa::svm;
        default:
            return Isa::unknown;
    }
}

const char* to_string(Isa isa) {
    switch (isa) {
        case Isa::vmx:
            return "vmx";
        case Isa::svm:
            return "svm";
        case Isa::unknown:
            return "unknown";
    }
    return "unknown";
}

std::string exit_reason_name(Isa isa, uint64_t reason) {
    switch (isa) {
        case Isa::vmx:
            return vmx_name(reason);
        case Isa::svm:
            return svm_name(reason);
        case Isa::unknown:
            break;
    }
    return fmt::format("UNKNOWN({})", reason);
}

Isa host_kvm_isa(const std::string& sysfs_root) {
    std::error_code ec;
    bool intel = std::filesystem::exists(sysfs_root + "/module/kvm_intel", ec);
    bool amd = std::filesystem::exists(sysfs_root + "/module/kvm_amd", ec);
    if (intel && !amd) return Isa::vmx;
    if (amd && !intel) return Isa::svm;
    return Isa::unknown;
}

}  // namespace fb
