// A tracefs event format file (events/<system>/<event>/format), parsed.
//
// The kernel describes each tracepoint's binary record there: its ID (the perf_event_attr.config of a
// PERF_TYPE_TRACEPOINT event) and every field's offset, size and signedness. kvm_exit gained fields
// over the years (intr_info, error_code, vcpu_id, requests) and kernels build the struct their own
// way, so a PERF_SAMPLE_RAW record is only readable through the format of the running kernel.
//
//   name: kvm_exit
//   ID: 103
//   format:
//           field:unsigned short common_type;       offset:0;       size:2; signed:0;
//           ...
//           field:unsigned int exit_reason; offset:8;       size:4; signed:0;
//
//   print fmt: "..."
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fb {

struct TracepointFormat {
    struct Field {
        std::string name;  // "exit_reason"; for an array "insn" (type keeps the "[15]")
        std::string type;  // the C declaration before the name: "unsigned int", "__u8", "__data_loc char[]"
        uint32_t offset = 0;
        uint32_t size = 0;
        bool is_signed = false;
    };

    std::string name;
    uint64_t id = 0;
    std::vector<Field> fields;  // common_* fields included, in file order

    // nullptr when the kernel's tracepoint has no such field (an older kvm_exit has no vcpu_id).
    const Field* field(std::string_view field_name) const;
};

// std::runtime_error naming the line when the text is not a format file (no name or ID, a field line
// without offset/size, a field that does not fit the 64 KiB a trace record can be).
TracepointFormat parse_tracepoint_format(std::string_view text);

// Reads and parses a format file; std::runtime_error with the path and errno text.
TracepointFormat read_tracepoint_format(const std::string& path);

// The field's value in one raw record (the bytes after PERF_SAMPLE_RAW's u32 size, starting at
// common_type), in host byte order. Signed fields are sign-extended, so (int64_t)value is the signed
// value. nullopt when the record is too short for the field, or the field is not 1, 2, 4 or 8 bytes
// (arrays such as kvm_emulate_insn's insn[15]).
std::optional<uint64_t> extract(const TracepointFormat::Field& field, std::span<const uint8_t> raw);

}  // namespace fb
