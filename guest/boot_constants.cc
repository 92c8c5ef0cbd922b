// The architectural numbers guest/boot.S needs to enter long mode, handed to it from common/x86
// as absolute symbols: assembly cannot read C++ constants, so C++ emits them (the idea of Linux's
// asm-offsets), and the 32-bit entry writes none of its own. boot.S uses them as immediates; the
// linker fills them in.
#include "common/x86/control_registers.h"
#include "common/x86/msr_index.h"
#include "common/x86/paging.h"

// %p0 prints the bare number (%c0 refuses one wider than a sign-extended 32-bit immediate).
#define FB_EXPORT_TO_ASSEMBLY(name, value) asm(".globl " #name "\n\t.set " #name ", %p0" ::"i"(uint64_t(value)))

namespace fb::guest {
namespace {

// Never called: its statements take effect when this file is assembled.
[[gnu::used]] void export_boot_constants() {
    FB_EXPORT_TO_ASSEMBLY(kBootMsrEfer, x86::Msr::efer);
    FB_EXPORT_TO_ASSEMBLY(kBootEfer, x86::kEferLme);
    FB_EXPORT_TO_ASSEMBLY(kBootCr4, x86::kCr4Pae);
    FB_EXPORT_TO_ASSEMBLY(kBootCr0, x86::kCr0Pg | x86::kCr0Wp | x86::kCr0Pe);
    // Entries OR-ed onto an address: a table link, and a 2 MiB identity page.
    FB_EXPORT_TO_ASSEMBLY(kBootTableEntry, x86::table_entry(0));
    FB_EXPORT_TO_ASSEMBLY(kBootLargePageEntry, x86::large_page_entry(0));
}

}  // namespace
}  // namespace fb::guest
