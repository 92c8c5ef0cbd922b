// The guest-to-host record format, version 1. One definition, compiled into the guest's encoder and
// the host's parser (which treats every byte as hostile: it never trusts a length, never reads past
// its buffer, and rejects anything that is not exactly this grammar).
//
//   record  := "FB1" SP type *(SP key "=" value) SP "#" crc "\n"
//   type    := 1*16 [a-z0-9_]
//   key     := 1*16 [a-z0-9_]
//   value   := 0*256 printable ASCII except SP, "=" and "#"
//   crc     := 8 lowercase hex digits, CRC-32 (IEEE 802.3) of every byte before the "#"
//
// A line is at most kMaxLine bytes including "\n". Lines that do not start with "FB" are firmware
// or console noise and are skipped; lines that do and fail the grammar or the CRC are corrupt.
#pragma once

#include "common/text.h"

namespace fb::wire {

inline constexpr int kVersion = 1;
inline constexpr Str kMagic = "FB1";
inline constexpr size_t kMaxLine = 1024;
inline constexpr size_t kMaxFields = 40;
inline constexpr size_t kMaxName = 16;
inline constexpr size_t kMaxValue = 256;
// Samples travel in chunks small enough that a record with four counters stays under kMaxLine.
inline constexpr size_t kSamplesPerRecord = 8;

constexpr uint32_t crc32_update(uint32_t crc, Str bytes) {
    crc = ~crc;
    for (size_t i = 0; i < bytes.n; ++i) {
        crc ^= uint8_t(bytes[i]);
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}
constexpr uint32_t crc32(Str bytes) { return crc32_update(0, bytes); }

constexpr bool is_name_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }
constexpr bool is_value_char(char c) { return c > ' ' && c <= '~' && c != '=' && c != '#'; }

// ---- Encoder (guest side; also used by host tests and fault injection) ----------------------

class Writer {
public:
    explicit constexpr Writer(Str type) : out_(buf_, kMaxLine) {
        out_.put(kMagic);
        out_.put(' ');
        out_.put(type);
    }
    constexpr Writer& field(Str key, Str value) {
        if (begin(key))
            for (size_t i = 0; i < value.n && i < kMaxValue; ++i) out_.put(is_value_char(value[i]) ? value[i] : '_');
        return *this;
    }
    constexpr Writer& field(Str key, uint64_t value) {
        if (begin(key)) out_.put_u64(value);
        return *this;
    }
    constexpr Writer& hex(Str key, uint64_t value) {
        if (begin(key)) out_.put("0x"), out_.put_hex(value);
        return *this;
    }
    constexpr Writer& list(Str key, const uint64_t* values, size_t count) {
        if (!begin(key)) return *this;
        for (size_t i = 0; i < count; ++i) {
            if (i) out_.put(',');
            out_.put_u64(values[i]);
        }
        return *this;
    }
    // Seals the record; returns the whole line including "\n". A record with too many or too long
    // fields is cut at a field boundary and marked truncated=1: the host sees a valid record that
    // says so, never a corrupt one.
    constexpr Str finish() {
        if (truncated_ || out_.overflowed() || out_.size() > kMaxLine - 32) {
            out_.truncate(last_field_end_);
            out_.put(" truncated=1");
        }
        out_.put(' ');
        uint32_t crc = crc32(out_.str());
        out_.put('#');
        out_.put_hex(crc, 8);
        out_.put('\n');
        return out_.str();
    }

private:
    // Returns false once the record is full (one field is kept in reserve for "truncated").
    constexpr bool begin(Str key) {
        if (truncated_ || fields_ == kMaxFields - 1 || out_.overflowed() || out_.size() > kMaxLine - 32) {
            if (!truncated_ && !out_.overflowed() && out_.size() <= kMaxLine - 32) last_field_end_ = out_.size();
            truncated_ = true;
            return false;
        }
        last_field_end_ = out_.size();
        ++fields_;
        out_.put(' ');
        out_.put(key);
        out_.put('=');
        return true;
    }
    char buf_[kMaxLine] = {};
    FixedWriter out_;
    size_t last_field_end_ = 0, fields_ = 0;
    bool truncated_ = false;
};

// ---- Parser (host side) ---------------------------------------------------------------------

enum class Error : uint8_t {
    none,
    noise,         // not a record: firmware banner, console text
    too_long,      // longer than kMaxLine before "\n"
    bad_magic,     // starts with "FB" but not "FB1 " (wrong version or garbage)
    bad_checksum,  // CRC mismatch or missing "#crc" trailer: corrupted or truncated line
    bad_syntax,    // CRC fine but the grammar is not: an encoder bug, never tolerated
    too_many_fields,
};

constexpr Str error_name(Error e) {
    switch (e) {
        case Error::none: return "none";
        case Error::noise: return "noise";
        case Error::too_long: return "too_long";
        case Error::bad_magic: return "bad_magic";
        case Error::bad_checksum: return "bad_checksum";
        case Error::bad_syntax: return "bad_syntax";
        case Error::too_many_fields: return "too_many_fields";
    }
    return "unknown";
}

struct Field {
    Str key, value;
};

// Views into the line it was parsed from: valid while that line's bytes are.
struct Record {
    Str type;
    Field fields[kMaxFields];
    size_t count = 0;

    constexpr bool get(Str key, Str& out) const {
        for (size_t i = 0; i < count; ++i)
            if (fields[i].key == key) return out = fields[i].value, true;
        return false;
    }
    constexpr bool get_u64(Str key, uint64_t& out) const {
        Str v;
        return get(key, v) && parse_u64(v, out);
    }
};

// Parses one complete line (without its "\n").
constexpr Error parse_line(Str line, Record& rec) {
    rec.count = 0;
    if (line.n && line[line.n - 1] == '\r') line = line.sub(0, line.n - 1);
    if (!line.starts_with("FB")) return Error::noise;
    if (line.n >= kMaxLine) return Error::too_long;
    if (!line.starts_with("FB1 ")) return Error::bad_magic;
    // Trailer: " #" + 8 lowercase hex digits, exactly at the end.
    if (line.n < 15 || line[line.n - 10] != ' ' || line[line.n - 9] != '#') return Error::bad_checksum;
    uint32_t want = 0;
    for (size_t i = line.n - 8; i < line.n; ++i) {
        char c = line[i];
        if (c >= '0' && c <= '9') want = want << 4 | uint32_t(c - '0');
        else if (c >= 'a' && c <= 'f') want = want << 4 | uint32_t(c - 'a' + 10);
        else return Error::bad_checksum;
    }
    Str body = line.sub(0, line.n - 9);  // every byte before the '#'
    if (crc32(body) != want) return Error::bad_checksum;

    Str content = body.sub(4, body.n - 5);  // between "FB1 " and the trailing space
    Splitter words(content, ' ');
    Str w;
    bool first = true;
    while (words.next(w)) {
        if (first) {
            if (w.empty() || w.n > kMaxName) return Error::bad_syntax;
            for (size_t i = 0; i < w.n; ++i)
                if (!is_name_char(w[i])) return Error::bad_syntax;
            rec.type = w;
            first = false;
            continue;
        }
        size_t eq = w.find('=');
        if (eq == 0 || eq == w.n || eq > kMaxName) return Error::bad_syntax;
        Str key = w.sub(0, eq), value = w.sub(eq + 1);
        for (size_t i = 0; i < key.n; ++i)
            if (!is_name_char(key[i])) return Error::bad_syntax;
        if (value.n > kMaxValue) return Error::bad_syntax;
        for (size_t i = 0; i < value.n; ++i)
            if (!is_value_char(value[i])) return Error::bad_syntax;
        if (rec.count == kMaxFields) return Error::too_many_fields;
        rec.fields[rec.count++] = {key, value};
    }
    return first ? Error::bad_syntax : Error::none;
}

// Reassembles lines from an arbitrary byte stream (serial chunks of any size). Bounded memory:
// a line that outgrows kMaxLine is reported once as too_long and skipped up to its "\n".
class LineAssembler {
public:
    // Feeds one byte; returns true when a complete line (or an overflow) is ready in line()/error().
    constexpr bool push(char c) {
        if (c == '\n') {
            bool was_overflow = overflow_;
            overflow_ = false;
            ready_len_ = len_;
            len_ = 0;
            ready_error_ = was_overflow ? Error::too_long : Error::none;
            return true;
        }
        if (overflow_) return false;
        if (len_ == kMaxLine) {
            overflow_ = true;
            return false;
        }
        buf_[len_++] = c;
        return false;
    }
    constexpr Str line() const { return {buf_ready(), ready_len_}; }
    constexpr Error error() const { return ready_error_; }
    // Bytes of an unterminated last line (a guest that died mid-record).
    constexpr Str pending() const { return {buf_, len_}; }

private:
    // The completed line is the prefix of buf_ until the next push() overwrites it.
    constexpr const char* buf_ready() const { return buf_; }
    char buf_[kMaxLine] = {};
    size_t len_ = 0, ready_len_ = 0;
    bool overflow_ = false;
    Error ready_error_ = Error::none;
};

}  // namespace fb::wire
