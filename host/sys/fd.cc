#include "host/sys/fd.h"

#include <sys/mman.h>
#include <unistd.h>

namespace fb {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
}

void UniqueFd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
    if (this != &o) {
        if (addr_) ::munmap(addr_, bytes_);
        addr_ = o.addr_, bytes_ = o.bytes_;
        o.addr_ = nullptr, o.bytes_ = 0;
    }
    return *this;
}

Mapping::~Mapping() {
    if (addr_) ::munmap(addr_, bytes_);
}

}  // namespace fb
