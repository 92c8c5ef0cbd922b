#include "host/sys/sysfs.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>

namespace fb {

std::string trim(std::string s) {
    auto not_space = [](unsigned char c) { return !std::isspace(c); };
    s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
    s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
    return s;
}

std::optional<std::string> read_sysfs_attr(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    // Attributes are at most a page; /proc files that report size 0 still stream fine.
    constexpr size_t kMax = 1 << 20;
    std::string s;
    char buf[4096];
    while (s.size() < kMax && in.read(buf, sizeof buf).gcount() > 0) s.append(buf, size_t(in.gcount()));
    if (in.bad()) return std::nullopt;
    return trim(std::move(s));
}

namespace {

std::optional<uint64_t> parse_u64(std::string s, int base) {
    if (s.empty()) return std::nullopt;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
}

}  // namespace

std::optional<uint64_t> parse_hex_u64(const std::string& text) {
    std::string s = trim(text);
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.erase(0, 2);
    return parse_u64(std::move(s), 16);
}

std::optional<uint64_t> parse_dec_u64(const std::string& text) { return parse_u64(trim(text), 10); }

}  // namespace fb
