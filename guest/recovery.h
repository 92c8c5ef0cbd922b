// Exceptions never kill the run: the runner arms a recovery point around each cell, and the
// exception handler jumps back to it with the fault recorded.
#pragma once

#include <stdint.h>

namespace fb::guest {

struct JmpBuf {
    uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip;
};

extern "C" [[gnu::returns_twice]] int fb_setjmp(JmpBuf* buf);
extern "C" [[noreturn]] void fb_longjmp(JmpBuf* buf, int value);

struct FaultInfo {
    uint64_t vector, error_code, rip, cr2;
};

class Recovery final {
public:
    // Usage: if (Recovery::arm() == 0) { risky(); } else { fault in Recovery::last() }; disarm().
    static JmpBuf* point() { return armed_ ? &buf_ : nullptr; }
    static JmpBuf& buf() { return buf_; }
    static void set_armed(bool on) { armed_ = on; }
    static FaultInfo& last() { return last_; }

private:
    static inline JmpBuf buf_{};
    static inline bool armed_ = false;
    static inline FaultInfo last_{};
};

// A macro, because setjmp must be called in the frame that later resumes.
#define FB_TRY() (::fb::guest::Recovery::set_armed(true), ::fb::guest::fb_setjmp(&::fb::guest::Recovery::buf()) == 0)

}  // namespace fb::guest
