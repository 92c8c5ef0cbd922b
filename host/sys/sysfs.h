// sysfs and procfs text: an attribute is one line with a trailing newline, numbers in decimal or hex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace fb {

std::optional<std::string> read_sysfs_attr(const std::string& path);  // trimmed; nullopt if unreadable
std::optional<uint64_t> parse_hex_u64(const std::string& s);          // "1f", "0x1f"; nullopt on junk/overflow
std::optional<uint64_t> parse_dec_u64(const std::string& s);
std::string trim(std::string s);                                      // leading and trailing whitespace off

}  // namespace fb
