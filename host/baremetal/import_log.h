// `flushbench import LOG`: a serial capture of the microkernel booted bare metal (host/iso_image.h)
// becomes cells with backend "native-ring0", mode "native": the ring-0 patterns (WBINVD, port I/O)
// without a hypervisor underneath, measured by the very kernel the guest runs.
//
// A capture is hostile input: IPMI SOL and terminal loggers add CRLF, ANSI escapes, NULs and line
// noise; GRUB and the firmware draw menus; a BMC drops bytes. Every line goes through
// fb::RecordStream, the one record parser, after two repairs the record checksum makes safe:
// control bytes and escape sequences are removed, and a record preceded by junk on its line is cut
// out of it (split at "FB1 "), or rejoined when a logger wrapped it onto the next line. A repair
// can only ever turn a line into a record whose CRC-32 matches; everything else stays corrupt.
// Nothing is dropped: every corrupt line is listed with its line number, a cell whose records broke
// is `corrupt`, the cell the log ends in is `hung`, and cells the configuration announced but the
// log never began are listed too. A log holding several boots yields each boot's cells.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"
#include "host/results/record_stream.h"

namespace fb {

inline constexpr const char* kNativeRing0Backend = "native-ring0";

struct ImportOptions {
    uint64_t tsc_khz = 0;  // the machine's TSC rate when its CPUID does not report one; 0: from the log
};

// One boot of the kernel in the log: from its hello record to the next hello or the end.
struct ImportedBoot {
    size_t first_line = 0;                      // the hello record's line in the log (1-based)
    std::map<std::string, std::string> hello;   // the kernel's self-description
    std::optional<nlohmann::json> config;       // the config record: patterns, footprints, reps, ...
    RecordStream::Health health;
    bool finished = false;                      // the summary record arrived
    std::optional<std::string> guest_error;     // an error or panic record
    uint64_t cells_received = 0;                // cells the stream completed (any status)
    uint64_t cells_missing = 0;                 // announced by config, never completed in the log
};

struct CorruptLine {
    size_t line = 0;     // 1-based line number in the log
    std::string error;   // wire::error_name: bad_checksum, bad_magic, too_long, ...
    std::string text;    // the line after removing control bytes, at most 1100 bytes
};

struct ImportResult {
    std::vector<Cell> cells;                // backend native-ring0, mode native, in log order
    std::vector<ImportedBoot> boots;
    std::vector<CorruptLine> corrupt;       // every one of them
    uint64_t lines = 0;                     // lines in the log
    uint64_t noise_before_first_record = 0; // firmware, GRUB: lines before the kernel's first record
    uint64_t repaired_bytes = 0;            // control bytes and escape-sequence bytes removed
    uint64_t resynced = 0;                  // records cut out of a line that began with junk
    uint64_t rejoined = 0;                  // records rejoined from a wrapped line
    std::vector<std::string> warnings;      // not bare metal, TSC rate unknown, no summary, ...

    // For the results context (context.flushbench.run): the hello facts and the stream's health.
    nlohmann::json facts() const;
};

ImportResult import_serial_log(const std::string& text, const ImportOptions& opts = {});

// `flushbench import LOG --out FILE [--tsc-khz N]`: writes a results file (Google Benchmark schema,
// context describing the measured machine from its hello record) atomically. Returns an ExitStatus:
// 0 every cell measured, 1 some cells hung/corrupt/missing or corrupt lines, 2 no flushbench records
// in the log (or it cannot be read).
int run_import(const std::string& log_path, const std::string& out, const std::string& command_line, const ImportOptions& opts = {});

}  // namespace fb
