#include "host/vmm/elf_image.h"

#include <elf.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

namespace fb {
namespace {

constexpr std::string_view kRebuildHint = "rebuild it with cmake --build build";

[[noreturn]] void invalid(std::string_view name, std::string_view why) {
    throw std::runtime_error(
        fmt::format("guest image {} is not a usable ELF64 x86-64 executable ({}): {}", name, why, kRebuildHint));
}

// a + b <= limit without wrapping.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

template <typename T>
T read_at(std::span<const uint8_t> file, uint64_t offset) {
    T v;
    std::memcpy(&v, file.data() + offset, sizeof v);  // memcpy: file offsets need not be aligned
    return v;
}

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

ElfImage ElfImage::load(const std::string& path) {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) {
        int err = errno;
        if (err == ENOENT)
            throw std::runtime_error(fmt::format("guest image {} not found: build it with cmake --build build", path));
        throw std::runtime_error(fmt::format("cannot open guest image {}: {}: check the path and its permissions", path,
                                             std::generic_category().message(err)));
    }
    struct stat st {};
    if (fstat(fileno(f.get()), &st) != 0 || !S_ISREG(st.st_mode))
        throw std::runtime_error(fmt::format("guest image {} is not a regular file: pass the kernel's .elf", path));
    if (uint64_t(st.st_size) > kMaxFileBytes)
        invalid(path, fmt::format("{} bytes, more than the {} MiB limit", st.st_size, kMaxFileBytes >> 20));
    std::vector<uint8_t> bytes(size_t(st.st_size));
    if (std::fread(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
        throw std::runtime_error(
            fmt::format("cannot read guest image {}: short read (file changed while reading?)", path));
    return parse(bytes, path);
}

ElfImage ElfImage::parse(std::span<const uint8_t> file, std::string_view name) {
    if (file.size() < sizeof(Elf64_Ehdr))
        invalid(name, fmt::format("{} bytes, shorter than an ELF header", file.size()));
    auto eh = read_at<Elf64_Ehdr>(file, 0);
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) invalid(name, "no ELF magic");
    if (eh.e_ident[EI_CLASS] != ELFCLASS64) invalid(name, "not ELFCLASS64");
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB) invalid(name, "not little-endian");
    if (eh.e_ident[EI_VERSION] != EV_CURRENT) invalid(name, "unknown ELF version");
    if (eh.e_machine != EM_X86_64) invalid(name, fmt::format("e_machine {} is not EM_X86_64", eh.e_machine));
    if (eh.e_type != ET_EXEC) invalid(name, "not ET_EXEC: the kernel must be linked at fixed addresses");
    if (eh.e_phentsize != sizeof(Elf64_Phdr)) invalid(name, fmt::format("e_phentsize {}", eh.e_phentsize));
    // PN_XNUM moves the real count to section 0; a kernel with 65535 segments is not ours.
    if (eh.e_phnum == 0 || eh.e_phnum == PN_XNUM) invalid(name, "no program headers");
    if (!fits(eh.e_phoff, uint64_t(eh.e_phnum) * sizeof(Elf64_Phdr), file.size()))
        invalid(name, "program headers run past the end of the file (truncated?)");

    ElfImage image;
    image.name_ = std::string(name);
    image.entry_ = eh.e_entry;
    bool entry_loaded = false;
    for (uint64_t i = 0; i < eh.e_phnum; ++i) {
        auto ph = read_at<Elf64_Phdr>(file, eh.e_phoff + i * sizeof(Elf64_Phdr));
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
        if (ph.p_filesz > ph.p_memsz) invalid(name, fmt::format("segment {} has p_filesz > p_memsz", i));
        if (!fits(ph.p_offset, ph.p_filesz, file.size()))
            invalid(name, fmt::format("segment {} runs past the end of the file (truncated?)", i));
        if (!fits(ph.p_paddr, ph.p_memsz, ~uint64_t{0}))
            invalid(name, fmt::format("segment {} wraps the address space", i));
        ElfSegment seg;
        seg.paddr = ph.p_paddr;
        seg.memsz = ph.p_memsz;
        seg.bytes.assign(file.begin() + std::ptrdiff_t(ph.p_offset),
                         file.begin() + std::ptrdiff_t(ph.p_offset + ph.p_filesz));
        // Paging is an identity map at entry, so the entry's virtual address is a physical one.
        if (eh.e_entry >= seg.paddr && eh.e_entry - seg.paddr < seg.memsz) entry_loaded = true;
        image.segments_.push_back(std::move(seg));
    }
    if (image.segments_.empty()) invalid(name, "no PT_LOAD segment");
    if (!entry_loaded) invalid(name, fmt::format("entry point {:#x} is outside every PT_LOAD segment", eh.e_entry));
    return image;
}

}  // namespace fb
