// Native ring 0: a GRUB-bootable ISO that boots the microkernel on bare metal (CD, USB stick, or
// PXE through GRUB/iPXE) through its Multiboot v1 entry, with the run configuration baked into
// grub.cfg. The kernel streams its records on COM1 at 115200 8N1; capture them (IPMI SOL,
// null-modem cable) and turn the log into a results file with import_serial_log (host/import_log.h).
//
// Built with grub-mkrescue (grub-common) from GRUB's BIOS modules (grub-pc-bin), packed by xorriso;
// mtools is needed too when GRUB's UEFI modules are installed (grub-mkrescue then adds an EFI image).
#pragma once

#include <string>

namespace fb {

struct RunOptions;

// Where the kernel sits inside the ISO.
inline constexpr const char* kIsoKernelPath = "/boot/flushbench-guest.elf";

// grub.cfg for `cmdline`: serial console on COM1 at 115200 8N1 (and the local console), timeout 0,
// `multiboot <kernel> <cmdline>`, `boot`. Each word is single-quoted, so GRUB's script syntax
// ($, ;, #, braces) cannot change it. Throws std::invalid_argument when cmdline holds a single quote
// or a character outside printable ASCII, or is not a configuration the guest's parser accepts.
std::string grub_cfg(const std::string& cmdline);

// Builds out_iso (atomically: a temporary file renamed into place) from the guest ELF and cmdline.
// Throws std::invalid_argument for a bad cmdline or a guest without a Multiboot header, and
// std::runtime_error (one line, naming the package to install) when a tool is missing or fails.
void build_iso(const std::string& guest_elf, const std::string& cmdline, const std::string& out_iso);

// The guest command line `flushbench run` would give for these options (patterns, footprints,
// reps, warmup, skip), checked with the guest's parser; std::invalid_argument when it is bad.
std::string image_cmdline(const RunOptions& o);

// `flushbench image --out FILE.iso [--patterns ... --footprints ... --reps N --warmup N --skip ...
// --image guest.elf]`: o.out is the ISO, o.image the kernel (default: the one built with us).
// Prints what was built and how to boot it; returns an ExitStatus (host/runner.h).
int run_image(const RunOptions& o);

}  // namespace fb
