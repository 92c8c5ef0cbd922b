// What each way in tells the kernel: its command line and where RAM is.
#pragma once

#include "common/text.h"

namespace fb::guest {

enum class Entry : uint32_t { multiboot = 1, pvh = 2, direct = 3 };

inline const char* entry_name(Entry e) {
    switch (e) {
        case Entry::multiboot: return "multiboot";
        case Entry::pvh: return "pvh";
        case Entry::direct: return "direct";
    }
    return "?";
}

struct BootFacts {
    Entry entry;
    Str cmdline;
    uint64_t ram_end = 0;      // end of the RAM range that holds the image (capped at 4 GiB)
    uint16_t record_port = 0;  // direct entry: the VMM's record port; 0 = serial
    const char* problem = nullptr;  // set when the loader's info is unusable
};

BootFacts read_boot_facts(Entry entry, uint64_t info);

}  // namespace fb::guest
