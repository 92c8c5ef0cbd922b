// A KVM virtual machine as flushbench's own VMM sees it: /dev/kvm, one VM fd, one RAM slot from
// guest-physical 0, and the direct 64-bit boot of common/boot.h. Shaped like the KVM selftests'
// lib (tools/testing/selftests/kvm/lib): one call makes a runnable VM, and nothing hides the ioctls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "host/sys/fd.h"

namespace fb {

class ElfImage;
class Vcpu;

// Throws std::system_error naming the ioctl, like the selftests' KVM_IOCTL_ERROR().
[[noreturn]] void throw_kvm_error(std::string_view ioctl_name, int err);

// Guest-physical layout of the direct boot (common/boot.h), all below the image at 1 MiB. Page 0
// stays empty so a guest NULL dereference reads zeros, not VMM data.
namespace boot_layout {
inline constexpr uint64_t kPml4 = 0x1000;
inline constexpr uint64_t kPdpt = 0x2000;
inline constexpr uint64_t kPd = 0x3000;        // 512 x 2 MiB = the first 1 GiB, identity
inline constexpr uint64_t kGdt = 0x4000;       // null, code64 (0x08), data (0x10), TSS (0x18)
inline constexpr uint64_t kTss = 0x4800;       // a zeroed 64-bit TSS behind TR (VM entry demands a busy TSS)
inline constexpr uint64_t kBootInfo = 0x5000;  // boot::BootInfo
inline constexpr uint64_t kCmdline = 0x6000;   // NUL-terminated, at most kMaxCmdline bytes before the NUL
inline constexpr uint64_t kEnd = 0x7000;       // first byte after the VMM's boot data
inline constexpr uint64_t kMaxCmdline = 4095;
inline constexpr uint64_t kMappedBytes = 1ull << 30;
inline constexpr uint16_t kCodeSelector = 0x08;
inline constexpr uint16_t kDataSelector = 0x10;
inline constexpr uint16_t kTssSelector = 0x18;
}  // namespace boot_layout

class Vm {
public:
    static constexpr uint64_t kPageBytes = 4096;
    // RAM stays below the 32-bit MMIO hole (3-4 GiB), where x86 KVM keeps its own pages (the VMX
    // EPT identity map at 0xfffbc000) and the xAPIC page sits at 0xfee00000.
    static constexpr uint64_t kMaxMemBytes = 3ull << 30;
    static constexpr int kApiVersion = 12;

    // Opens /dev/kvm, creates the VM and its RAM slot: mem_bytes from guest-physical 0.
    explicit Vm(uint64_t mem_bytes);
    ~Vm();
    Vm(const Vm&) = delete;
    Vm& operator=(const Vm&) = delete;

    // The selftests' vm_create_with_one_vcpu(): image loaded, boot data written, vCPU 0 in long
    // mode at the image's entry. The vCPU is vcpu(0).
    static std::unique_ptr<Vm> create_with_one_vcpu(const ElfImage& image, uint64_t mem_bytes,
                                                    std::string_view cmdline);

    int kvm_fd() const { return kvm_.get(); }
    int fd() const { return vm_.get(); }
    uint64_t mem_bytes() const { return mem_bytes_; }

    // KVM_CHECK_EXTENSION on the VM fd (per-VM answers, e.g. KVM_CAP_BINARY_STATS_FD): 0 = absent.
    int check_extension(long cap) const;

    // Host pointer for guest-physical [addr, addr+len); throws std::out_of_range outside RAM.
    uint8_t* gpa(uint64_t addr, size_t len);
    const uint8_t* gpa(uint64_t addr, size_t len) const;
    // The same check without throwing, for guest-supplied addresses: nullptr outside RAM.
    uint8_t* try_gpa(uint64_t addr, size_t len) noexcept;

    // Copies the image's PT_LOAD segments to their physical addresses and zeroes their BSS.
    void load_elf(const ElfImage& image);
    // Writes page tables, GDT, TSS, BootInfo and the command line (layout above).
    void setup_direct_boot(std::string_view cmdline);

    // KVM_CREATE_VCPU with the next id; the VM owns it (vCPUs die before the VM's fds).
    Vcpu& add_vcpu();
    Vcpu& vcpu(size_t index) { return *vcpus_.at(index); }
    size_t vcpu_count() const { return vcpus_.size(); }

private:
    Mapping ram_;  // first: unmapped only after the VM and its vCPUs are gone, as the selftests do
    UniqueFd kvm_;
    UniqueFd vm_;
    uint64_t mem_bytes_ = 0;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;  // last: destroyed first
};

// The rate a vCPU's TSC ticks at (KVM_GET_TSC_KHZ): the host TSC unless KVM scales it; 0 if unknown.
uint64_t vcpu_tsc_khz(int vcpu_fd);
// The same for a new vCPU of a scratch VM: what QEMU's guests and the host itself run at.
uint64_t kvm_default_tsc_khz();

}  // namespace fb
