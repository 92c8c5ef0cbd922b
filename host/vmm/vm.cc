#include "host/vmm/vm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "common/boot.h"
#include "host/vmm/elf_image.h"
#include "host/sys/kvm.h"
#include "host/vmm/vcpu.h"

namespace fb {
namespace {


// Page-table entry bits (SDM vol. 3, 4-level paging).
constexpr uint64_t kPtePresent = 1ull << 0;
constexpr uint64_t kPteWritable = 1ull << 1;
constexpr uint64_t kPteLarge = 1ull << 7;  // in a PD entry: this entry maps 2 MiB
constexpr uint64_t kLargePageBytes = 2ull << 20;
constexpr size_t kEntriesPerTable = 512;

// Segment descriptors: 64-bit ring-0 code (L=1, D=0), flat read/write data, and the upper half
// of a 16-byte 64-bit TSS descriptor (type 0xb = busy: VM entry rejects an available TSS in TR).
constexpr uint64_t kGdtCode64 = 0x00af9b000000ffffull;
constexpr uint64_t kGdtData = 0x00cf93000000ffffull;
constexpr uint32_t kTssLimit = 0x67;  // a 64-bit TSS is 104 bytes
constexpr uint64_t kTssTypeBusy64 = 0xb;

uint64_t tss_descriptor_low(uint64_t base) {
    return (kTssLimit & 0xffff) | (base & 0xffffff) << 16 | kTssTypeBusy64 << 40 | 1ull << 47 /* present */ |
           (base >> 24 & 0xff) << 56;
}

}  // namespace

void throw_kvm_error(std::string_view ioctl_name, int err) {
    throw std::system_error(err, std::generic_category(), fmt::format("{} failed", ioctl_name));
}

// /dev/kvm, or the reason it cannot be opened and what to do about it.
UniqueFd open_kvm_or_throw() {
    KvmOpen k = open_kvm();
    if (!k.fd) throw std::runtime_error(fmt::format("{}: {}", k.why, k.fix));
    return std::move(k.fd);
}

Vm::Vm(uint64_t mem_bytes) : kvm_(open_kvm_or_throw()), mem_bytes_(mem_bytes) {
    if (mem_bytes == 0 || mem_bytes % kPageBytes != 0 || mem_bytes > kMaxMemBytes)
        throw std::invalid_argument(
            fmt::format("guest RAM of {} bytes: use a multiple of 4 KiB up to {} MiB", mem_bytes, kMaxMemBytes >> 20));
    int api = ::ioctl(kvm_.get(), KVM_GET_API_VERSION, 0);
    if (api != kApiVersion)
        throw std::runtime_error(fmt::format(
            "/dev/kvm reports KVM API version {}, not {}: this kernel's KVM is not usable", api, kApiVersion));

    int fd = create_vm_fd(kvm_.get());
    if (fd < 0) throw_kvm_error("KVM_CREATE_VM", errno);
    vm_ = UniqueFd(fd);

    // NORESERVE: RAM is sized for the largest footprint, but only touched pages cost host memory.
    void* ram = ::mmap(nullptr, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap of guest RAM failed");
    ram_ = Mapping(ram, mem_bytes);

    kvm_userspace_memory_region region{};
    region.slot = 0;
    region.guest_phys_addr = 0;
    region.memory_size = mem_bytes;
    region.userspace_addr = reinterpret_cast<uint64_t>(ram);
    if (::ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0)
        throw_kvm_error("KVM_SET_USER_MEMORY_REGION", errno);
    // No KVM_CREATE_IRQCHIP: the guest polls and takes no interrupts, and without an in-kernel
    // LAPIC a guest HLT comes back to us as KVM_EXIT_HLT instead of blocking in the kernel.
    // No KVM_SET_TSS_ADDR: it backs real-mode emulation on VMX, and the vCPU starts in long mode.
}

Vm::~Vm() = default;

std::unique_ptr<Vm> Vm::create_with_one_vcpu(const ElfImage& image, uint64_t mem_bytes, std::string_view cmdline) {
    auto vm = std::make_unique<Vm>(mem_bytes);
    vm->load_elf(image);
    vm->setup_direct_boot(cmdline);
    Vcpu& vcpu = vm->add_vcpu();
    vcpu.setup_long_mode(boot_layout::kPml4);
    vcpu.setup_direct_entry(image.entry(), boot_layout::kBootInfo);
    return vm;
}

int Vm::check_extension(long cap) const {
    int r = ::ioctl(vm_.get(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

uint8_t* Vm::try_gpa(uint64_t addr, size_t len) noexcept {
    if (len > mem_bytes_ || addr > mem_bytes_ - len) return nullptr;
    return static_cast<uint8_t*>(ram_.get()) + addr;
}

uint8_t* Vm::gpa(uint64_t addr, size_t len) {
    uint8_t* p = try_gpa(addr, len);
    if (!p)
        throw std::out_of_range(
            fmt::format("guest-physical range {:#x}+{:#x} is outside guest RAM (0..{:#x})", addr, len, mem_bytes_));
    return p;
}

const uint8_t* Vm::gpa(uint64_t addr, size_t len) const { return const_cast<Vm*>(this)->gpa(addr, len); }

void Vm::load_elf(const ElfImage& image) {
    for (const ElfSegment& seg : image.segments()) {
        if (seg.memsz > mem_bytes_ || seg.paddr > mem_bytes_ - seg.memsz)
            throw std::runtime_error(
                fmt::format("guest image {}: segment {:#x}+{:#x} does not fit in {} MiB of guest RAM: "
                            "give the VM more memory",
                            image.name(), seg.paddr, seg.memsz, mem_bytes_ >> 20));
        if (seg.paddr < boot_layout::kEnd)
            throw std::runtime_error(
                fmt::format("guest image {}: segment at {:#x} overlaps the VMM's boot data below "
                            "{:#x}: link the kernel at {:#x}",
                            image.name(), seg.paddr, boot_layout::kEnd, boot::kImageBase));
        uint8_t* dst = gpa(seg.paddr, seg.memsz);
        std::memcpy(dst, seg.bytes.data(), seg.bytes.size());
        std::memset(dst + seg.bytes.size(), 0, seg.memsz - seg.bytes.size());
    }
}

void Vm::setup_direct_boot(std::string_view cmdline) {
    namespace L = boot_layout;
    if (cmdline.size() > L::kMaxCmdline)
        throw std::invalid_argument(
            fmt::format("guest command line is {} bytes, the limit is {}: shorten it", cmdline.size(), L::kMaxCmdline));
    if (cmdline.find('\0') != std::string_view::npos)
        throw std::invalid_argument("guest command line contains a NUL byte: the guest would see it truncated");
    if (mem_bytes_ < L::kEnd) throw std::invalid_argument("guest RAM too small for the direct boot's data");

    std::memset(gpa(0, L::kEnd), 0, L::kEnd);
    auto put64 = [this](uint64_t addr, uint64_t v) { std::memcpy(gpa(addr, sizeof v), &v, sizeof v); };

    put64(L::kPml4, L::kPdpt | kPtePresent | kPteWritable);
    put64(L::kPdpt, L::kPd | kPtePresent | kPteWritable);
    static_assert(kEntriesPerTable * kLargePageBytes == L::kMappedBytes);
    for (uint64_t i = 0; i < kEntriesPerTable; ++i)
        put64(L::kPd + i * sizeof(uint64_t), i * kLargePageBytes | kPtePresent | kPteWritable | kPteLarge);

    // The GDT matches the hidden segment state Vcpu::setup_long_mode() loads, so a guest that
    // reloads a selector (iretq, a far return) before installing its own GDT gets the same segment.
    put64(L::kGdt + L::kCodeSelector, kGdtCode64);
    put64(L::kGdt + L::kDataSelector, kGdtData);
    put64(L::kGdt + L::kTssSelector, tss_descriptor_low(L::kTss));
    put64(L::kGdt + L::kTssSelector + sizeof(uint64_t), L::kTss >> 32);

    boot::BootInfo info{};
    info.magic = boot::kDirectMagic;
    info.version = boot::kBootInfoVersion;
    info.mem_bytes = mem_bytes_;
    info.cmdline_addr = L::kCmdline;
    info.cmdline_len = uint32_t(cmdline.size());
    info.record_port = boot::kRecordPort;
    std::memcpy(gpa(L::kBootInfo, sizeof info), &info, sizeof info);
    std::memcpy(gpa(L::kCmdline, cmdline.size() + 1), cmdline.data(), cmdline.size());  // NUL: zeroed above
}

Vcpu& Vm::add_vcpu() {
    vcpus_.push_back(std::make_unique<Vcpu>(*this, uint32_t(vcpus_.size())));
    return *vcpus_.back();
}

uint64_t vcpu_tsc_khz(int vcpu_fd) {
    int khz = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
    return khz > 0 ? uint64_t(khz) : 0;
}

uint64_t kvm_default_tsc_khz() {
    UniqueFd kvm = open_kvm().fd;
    if (!kvm) return 0;
    UniqueFd vm(create_vm_fd(kvm.get()));
    if (vm.get() < 0) return 0;
    UniqueFd vcpu(ioctl(vm.get(), KVM_CREATE_VCPU, 0));
    return vcpu.get() < 0 ? 0 : vcpu_tsc_khz(vcpu.get());
}

}  // namespace fb
