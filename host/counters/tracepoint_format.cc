#include "host/counters/tracepoint_format.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace fb {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

std::optional<uint64_t> parse_uint(std::string_view s) {
    s = trim(s);
    if (s.empty() || s.size() > 19) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + uint64_t(c - '0');
    }
    return v;
}

// "offset:8" out of "...;\toffset:8;\tsize:4;..." (keys are matched at a field boundary).
std::optional<uint64_t> attribute(std::string_view line, std::string_view key) {
    size_t pos = 0;
    while ((pos = line.find(key, pos)) != std::string_view::npos) {
        bool boundary = pos == 0 || line[pos - 1] == ';' || line[pos - 1] == '\t' || line[pos - 1] == ' ';
        if (boundary && pos + key.size() < line.size() && line[pos + key.size()] == ':') {
            size_t start = pos + key.size() + 1, end = line.find(';', start);
            return parse_uint(line.substr(start, end == std::string_view::npos ? end : end - start));
        }
        pos += key.size();
    }
    return std::nullopt;
}

// "unsigned int exit_reason" -> {"unsigned int", "exit_reason"}; "__u8 insn[15]" -> {"__u8[15]", "insn"};
// "__data_loc char[] name" -> {"__data_loc char[]", "name"}.
std::pair<std::string, std::string> split_declaration(std::string_view decl) {
    decl = trim(decl);
    std::string dims;
    if (!decl.empty() && decl.back() == ']') {
        size_t open = decl.rfind('[');
        if (open != std::string_view::npos) {
            dims = std::string(decl.substr(open));
            decl = trim(decl.substr(0, open));
        }
    }
    size_t cut = decl.find_last_of(" \t*");
    if (cut == std::string_view::npos) return {dims, std::string(decl)};
    std::string type(trim(decl.substr(0, cut + 1)));
    return {type + dims, std::string(decl.substr(cut + 1))};
}

}  // namespace

const TracepointFormat::Field* TracepointFormat::field(std::string_view field_name) const {
    for (const auto& f : fields)
        if (f.name == field_name) return &f;
    return nullptr;
}

TracepointFormat parse_tracepoint_format(std::string_view text) {
    TracepointFormat fmt;
    bool have_name = false, have_id = false;
    size_t line_no = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        ++line_no;
        std::string_view t = trim(line);
        if (t.starts_with("name:")) {
            fmt.name = std::string(trim(t.substr(5)));
            have_name = !fmt.name.empty();
        } else if (t.starts_with("ID:")) {
            auto id = parse_uint(t.substr(3));
            if (!id) throw std::runtime_error(fmt::format("tracepoint format line {}: bad ID \"{}\"", line_no, t));
            fmt.id = *id;
            have_id = true;
        } else if (t.starts_with("field:")) {
            size_t semi = t.find(';');
            if (semi == std::string_view::npos)
                throw std::runtime_error(
                    fmt::format("tracepoint format line {}: field without ';': \"{}\"", line_no, t));
            auto [type, name] = split_declaration(t.substr(6, semi - 6));
            auto offset = attribute(t.substr(semi), "offset");
            auto size = attribute(t.substr(semi), "size");
            auto is_signed = attribute(t.substr(semi), "signed");  // absent on very old kernels
            if (name.empty() || !offset || !size)
                throw std::runtime_error(
                    fmt::format("tracepoint format line {}: field needs a name, offset and size: \"{}\"", line_no, t));
            // A trace record's length is a u16 in the ring buffer: anything past 64 KiB is garbage.
            if (*offset > 0xffff || *size > 0xffff || *offset + *size > 0xffff)
                throw std::runtime_error(
                    fmt::format("tracepoint format line {}: field outside a trace record", line_no));
            fmt.fields.push_back({name, type, uint32_t(*offset), uint32_t(*size), is_signed.value_or(0) != 0});
        } else if (t.starts_with("print fmt:")) {
            break;  // the rest is the printk format, which may contain anything
        }
    }
    if (!have_name || !have_id)
        throw std::runtime_error(
            fmt::format("not a tracepoint format file: missing {}", !have_name ? "\"name:\"" : "\"ID:\""));
    return fmt;
}

TracepointFormat read_tracepoint_format(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("{}: {}", path, std::strerror(errno)));
    std::ostringstream ss;
    ss << in.rdbuf();
    try {
        return parse_tracepoint_format(ss.str());
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
    }
}

std::optional<uint64_t> extract(const TracepointFormat::Field& field, std::span<const uint8_t> raw) {
    if (field.size != 1 && field.size != 2 && field.size != 4 && field.size != 8) return std::nullopt;
    if (size_t(field.offset) + field.size > raw.size()) return std::nullopt;
    uint64_t v = 0;
    std::memcpy(&v, raw.data() + field.offset, field.size);  // little-endian host: low bytes first
    if (field.is_signed && field.size < 8) {
        unsigned shift = 64 - 8 * field.size;
        v = uint64_t(int64_t(v << shift) >> shift);
    }
    return v;
}

}  // namespace fb
