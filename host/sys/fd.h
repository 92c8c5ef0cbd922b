// Owning wrappers for the two kernel resources every layer holds: a file descriptor and a mapping.
#pragma once

#include <cstddef>

namespace fb {

// Owns one file descriptor; -1 means none.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

// Owns one mmap()ed range.
class Mapping {
public:
    Mapping() = default;
    Mapping(void* addr, size_t bytes) : addr_(addr), bytes_(bytes) {}
    Mapping(Mapping&& o) noexcept : addr_(o.addr_), bytes_(o.bytes_) { o.addr_ = nullptr, o.bytes_ = 0; }
    Mapping& operator=(Mapping&& o) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();

    void* get() const { return addr_; }
    size_t size() const { return bytes_; }

private:
    void* addr_ = nullptr;
    size_t bytes_ = 0;
};

}  // namespace fb
