// The contract between the guest kernel and whatever starts it. Three ways in, one kernel:
//
// 1. Multiboot v1 (QEMU -kernel on pc/q35, GRUB on bare metal): a.out-kludge header, so loaders
//    that refuse ELF64 load the image by address. EAX = 0x2BADB002, EBX = multiboot info.
// 2. PVH (QEMU -M microvm): XEN_ELFNOTE_PHYS32_ENTRY; EBX = hvm_start_info.
// 3. Direct 64-bit entry (flushbench's own VMM): the ELF entry point (e_entry), entered with
//      - long mode, CS a 64-bit ring-0 code segment, DS/ES/SS flat data (any valid selectors);
//      - paging on, identity-mapping at least the image, the BootInfo and the command line
//        (the VMM maps the first 1 GiB with 2 MiB pages);
//      - RFLAGS.IF = 0, RDI = kDirectMagic, RSI = guest-physical address of a BootInfo;
//      - RSP undefined: the kernel switches to its own stack and its own GDT, IDT and page tables.
//
// Guest-to-host I/O, all port-based so every backend can see it:
//   COM1 (0x3f8)     human console and, for QEMU and bare metal, the record stream (wire.h)
//   kRecordPort      direct entry only: OUT32 of the guest-physical address of a RecordBuffer,
//                    one exit per record, like the KVM selftests' ucall
//   kHopPort         direct entry only: any OUT moves the vCPU to the next pCPU of the VMM's hop
//                    set before it runs again, so KVM loads it there and adds that pCPU to its
//                    wbinvd_dirty_mask (the guest's `mask_width`, common/config.h)
//   kExitPort (0xf4) isa-debug-exit: OUT32 of an ExitCode; QEMU exits with status (code << 1) | 1
#pragma once

#include <stdint.h>

namespace fb::boot {

inline constexpr uint32_t kDirectMagic = 0x46424b31;  // "FBK1"
inline constexpr uint32_t kBootInfoVersion = 1;
inline constexpr uint16_t kCom1 = 0x3f8;
inline constexpr uint16_t kRecordPort = 0x0fb0;
inline constexpr uint16_t kHopPort = 0x0fb1;
inline constexpr uint16_t kExitPort = 0xf4;
inline constexpr uint64_t kImageBase = 0x100000;  // the kernel links and loads at 1 MiB

struct BootInfo {
    uint32_t magic;        // kDirectMagic
    uint32_t version;      // kBootInfoVersion
    uint64_t mem_bytes;    // RAM from guest-physical 0, contiguous
    uint64_t cmdline_addr; // guest-physical, NUL-terminated
    uint32_t cmdline_len;  // without the NUL
    uint16_t record_port;  // 0: records go to COM1
    uint16_t reserved;
};
static_assert(sizeof(BootInfo) == 32);

struct RecordBuffer {
    uint32_t len;          // bytes in data, at most wire::kMaxLine
    uint32_t reserved;
    char data[1024];
};

// Distinctive values: QEMU's own failures exit with small statuses (1 for "could not start"),
// which must never read as a guest verdict.
enum class ExitCode : uint32_t {
    done = 0x31,        // every cell ran (ok, unsupported, skipped or faulted): QEMU status 99
    bad_config = 0x32,  // the command line did not parse: status 101
    panic = 0x33,       // the kernel could not continue (no memory, fault outside a cell): status 103
};

inline constexpr bool is_exit_code(uint32_t v) { return v >= uint32_t(ExitCode::done) && v <= uint32_t(ExitCode::panic); }

inline constexpr int qemu_status(ExitCode c) { return int(uint32_t(c) << 1 | 1); }

}  // namespace fb::boot
