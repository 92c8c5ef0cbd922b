// The guest kernel as an ELF64 x86-64 executable: its PT_LOAD segments and its entry point, which
// is the direct 64-bit entry of common/boot.h. Every header field is checked before it is used,
// because a truncated or stale build output must fail with a message, not a wild copy.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fb {

struct ElfSegment {
    uint64_t paddr = 0;          // where the loader puts it (identity-mapped, so also where it runs)
    uint64_t memsz = 0;          // bytes in memory; memsz - bytes.size() are zero (BSS)
    std::vector<uint8_t> bytes;  // the file's bytes (p_filesz)
};

class ElfImage {
public:
    // Refuses files larger than this: the guest kernel is a few hundred KiB, and a
    // multi-GiB path given by mistake should not be read into memory.
    static constexpr uint64_t kMaxFileBytes = 256ull << 20;

    // Reads and validates the file; std::runtime_error with a one-line fix otherwise.
    static ElfImage load(const std::string& path);
    // Validates an image already in memory; `name` labels error messages.
    static ElfImage parse(std::span<const uint8_t> file, std::string_view name);

    const std::string& name() const { return name_; }
    uint64_t entry() const { return entry_; }
    const std::vector<ElfSegment>& segments() const { return segments_; }

private:
    std::string name_;
    uint64_t entry_ = 0;
    std::vector<ElfSegment> segments_;
};

}  // namespace fb
