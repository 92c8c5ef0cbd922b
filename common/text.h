// Freestanding text helpers shared by the guest kernel and the host.
// No libc, no allocation: the guest has neither, and the host parser must not trust lengths.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace fb {

// A non-owning view of bytes; std::string_view is not freestanding in GCC 12.
struct Str {
    const char* p = nullptr;
    size_t n = 0;

    constexpr Str() = default;
    constexpr Str(const char* s, size_t len) : p(s), n(len) {}
    constexpr Str(const char* s) : p(s), n(0) {   // NOLINT: implicit from literals is the point
        while (s && s[n]) ++n;
    }
    constexpr bool empty() const { return n == 0; }
    constexpr char operator[](size_t i) const { return p[i]; }
    constexpr Str sub(size_t from, size_t len = ~size_t{0}) const {
        if (from > n) from = n;
        if (len > n - from) len = n - from;
        return {p + from, len};
    }
    constexpr bool operator==(Str o) const {
        if (n != o.n) return false;
        for (size_t i = 0; i < n; ++i)
            if (p[i] != o.p[i]) return false;
        return true;
    }
    constexpr bool starts_with(Str o) const { return n >= o.n && sub(0, o.n) == o; }
    constexpr size_t find(char c, size_t from = 0) const {
        for (size_t i = from; i < n; ++i)
            if (p[i] == c) return i;
        return n;
    }
};

// Splits on one separator; empty pieces are returned (callers decide whether they are errors).
class Splitter {
public:
    constexpr Splitter(Str s, char sep) : rest_(s), sep_(sep), done_(false) {}
    constexpr bool next(Str& out) {
        if (done_) return false;
        size_t i = rest_.find(sep_);
        out = rest_.sub(0, i);
        if (i == rest_.n) done_ = true;
        else rest_ = rest_.sub(i + 1);
        return true;
    }

private:
    Str rest_;
    char sep_;
    bool done_;
};

// Decimal (or 0x-prefixed hex) to u64; false on empty input, junk or overflow.
constexpr bool parse_u64(Str s, uint64_t& out) {
    if (s.empty()) return false;
    uint64_t base = 10;
    size_t i = 0;
    if (s.n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) base = 16, i = 2;
    uint64_t v = 0;
    for (; i < s.n; ++i) {
        char c = s[i];
        uint64_t d;
        if (c >= '0' && c <= '9') d = uint64_t(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f') d = uint64_t(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F') d = uint64_t(c - 'A' + 10);
        else return false;
        if (v > (~uint64_t{0} - d) / base) return false;
        v = v * base + d;
    }
    out = v;
    return true;
}

// Sizes as users write them: 0, 4096, 4K, 64K, 1M, 2G (binary units).
constexpr bool parse_size(Str s, uint64_t& out) {
    if (s.empty()) return false;
    uint64_t mult = 1;
    char last = s[s.n - 1];
    if (last == 'K' || last == 'k') mult = 1ull << 10;
    else if (last == 'M' || last == 'm') mult = 1ull << 20;
    else if (last == 'G' || last == 'g') mult = 1ull << 30;
    if (mult != 1) s = s.sub(0, s.n - 1);
    uint64_t v = 0;
    if (!parse_u64(s, v) || v > (~uint64_t{0}) / mult) return false;
    out = v * mult;
    return true;
}

// Appends into a fixed buffer and remembers overflow instead of writing past the end.
class FixedWriter {
public:
    constexpr FixedWriter(char* buf, size_t cap) : buf_(buf), cap_(cap) {}
    constexpr void put(char c) {
        if (len_ < cap_) buf_[len_++] = c;
        else overflow_ = true;
    }
    constexpr void put(Str s) {
        for (size_t i = 0; i < s.n; ++i) put(s[i]);
    }
    constexpr void put_u64(uint64_t v) {
        char tmp[20];
        size_t k = 0;
        do tmp[k++] = char('0' + v % 10), v /= 10;
        while (v);
        while (k) put(tmp[--k]);
    }
    constexpr void put_hex(uint64_t v, int min_digits = 1) {
        char tmp[16];
        int k = 0;
        do tmp[k++] = "0123456789abcdef"[v & 15], v >>= 4;
        while (v || k < min_digits);
        while (k) put(tmp[--k]);
    }
    constexpr size_t size() const { return len_; }
    constexpr bool overflowed() const { return overflow_; }
    constexpr Str str() const { return {buf_, len_}; }
    constexpr void truncate(size_t n) {
        if (n < len_) len_ = n;
    }

private:
    char* buf_;
    size_t cap_;
    size_t len_ = 0;
    bool overflow_ = false;
};

}  // namespace fb
