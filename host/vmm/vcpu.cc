#include "host/vmm/vcpu.h"

#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "common/boot.h"

namespace fb {
namespace {

// Control registers and EFER (SDM vol. 3, 2.5 and 2.2.1).
constexpr uint64_t kCr0Pe = 1ull << 0;
constexpr uint64_t kCr0Mp = 1ull << 1;  // with NE: x87/SSE faults are reported as #MF/#XM
constexpr uint64_t kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Ne = 1ull << 5;
constexpr uint64_t kCr0Wp = 1ull << 16;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kCr4Osfxsr = 1ull << 9;  // SSE usable without #UD
constexpr uint64_t kCr4Osxmmexcpt = 1ull << 10;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kRflagsFixed = 1ull << 1;  // bit 1 always reads 1; IF = 0

// Hidden segment types, accessed bit set: VMX entry checks reject an unaccessed usable segment.
constexpr uint8_t kSegCodeExecReadAccessed = 0xb;
constexpr uint8_t kSegDataReadWriteAccessed = 0x3;
constexpr uint8_t kSegTss64Busy = 0xb;
constexpr uint32_t kSegFlatLimit = 0xffffffff;
constexpr uint32_t kTssLimit = 0x67;

// KVM's own table holds at most 256 entries today; grow to 16x that before calling it hostile.
constexpr uint32_t kFirstCpuidEntries = 64;
constexpr uint32_t kMaxCpuidEntries = 4096;

// struct kvm_cpuid2 as the kernel lays it out. Debian 12's uapi headers (linux-libc-dev 6.1)
// spell its flexible array as __DECLARE_FLEX_ARRAY, which in C++ adds a 1-byte empty struct:
// sizeof(kvm_cpuid2) is 12, entries sit at offset 12, and KVM_GET_SUPPORTED_CPUID/KVM_SET_CPUID2,
// whose numbers encode that size, fail with EINVAL. Fixed upstream in Linux 6.7's stddef.h.
struct Cpuid2Header {
    uint32_t nent;
    uint32_t padding;
};
static_assert(sizeof(Cpuid2Header) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);

// A real-time signal nothing else in flushbench uses; SIGUSR1/2 stay the application's.
int kick_signal() { return SIGRTMIN + 2; }

extern "C" void ignore_kick(int) {}

void install_kick_handler_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_handler = ignore_kick;
        // SA_RESTART keeps other syscalls in the vCPU thread transparent; KVM_RUN still returns
        // EINTR because KVM answers a pending signal with -EINTR, never -ERESTARTSYS.
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(kick_signal(), &sa, nullptr) != 0)
            throw std::system_error(errno, std::generic_category(), "sigaction for the vCPU kick signal");
    });
}

// A thread that inherited a blocked kick signal (e.g. from a sigwait()-style SIGINT thread setup)
// could never be kicked out of KVM_RUN.
void unblock_kick_in_this_thread() {
    thread_local bool done = false;
    if (done) return;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, kick_signal());
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    done = true;
}

kvm_segment flat_segment(uint16_t selector, uint8_t type, bool code) {
    kvm_segment s{};
    s.base = 0;
    s.limit = kSegFlatLimit;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.dpl = 0;
    s.db = code ? 0 : 1;  // a 64-bit code segment must have D = 0 when L = 1
    s.s = 1;
    s.l = code ? 1 : 0;
    s.g = 1;
    return s;
}

}  // namespace

Vcpu::Vcpu(const Vm& vm, uint32_t id) : id_(id) {
    install_kick_handler_once();
    int fd = ::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
    if (fd < 0) throw_kvm_error("KVM_CREATE_VCPU", errno);
    fd_ = UniqueFd(fd);

    int run_bytes = ::ioctl(vm.kvm_fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_bytes < 0) throw_kvm_error("KVM_GET_VCPU_MMAP_SIZE", errno);
    if (size_t(run_bytes) < sizeof(kvm_run))
        throw std::runtime_error(
            fmt::format("KVM_GET_VCPU_MMAP_SIZE returned {}, less than struct kvm_run", run_bytes));
    void* run = ::mmap(nullptr, size_t(run_bytes), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap of the vCPU's kvm_run");
    run_map_ = Mapping(run, size_t(run_bytes));
    run_ = static_cast<kvm_run*>(run);

    // Header and entries in one buffer of u64s, so both are aligned as the kernel expects.
    std::vector<uint64_t> buf;
    for (uint32_t n = kFirstCpuidEntries;; n *= 2) {
        if (n > kMaxCpuidEntries) throw std::runtime_error("KVM_GET_SUPPORTED_CPUID wants more than 4096 entries");
        size_t bytes = sizeof(Cpuid2Header) + n * sizeof(kvm_cpuid_entry2);
        buf.assign((bytes + sizeof(uint64_t) - 1) / sizeof(uint64_t), 0);
        reinterpret_cast<Cpuid2Header*>(buf.data())->nent = n;
        if (::ioctl(vm.kvm_fd(), kGetSupportedCpuid, buf.data()) == 0) break;
        if (errno != E2BIG) throw_kvm_error("KVM_GET_SUPPORTED_CPUID", errno);
    }
    if (::ioctl(fd, kSetCpuid2, buf.data()) != 0) throw_kvm_error("KVM_SET_CPUID2", errno);
}

kvm_regs Vcpu::regs() const {
    kvm_regs r{};
    if (::ioctl(fd_.get(), KVM_GET_REGS, &r) != 0) throw_kvm_error("KVM_GET_REGS", errno);
    return r;
}

void Vcpu::set_regs(const kvm_regs& r) {
    if (::ioctl(fd_.get(), KVM_SET_REGS, &r) != 0) throw_kvm_error("KVM_SET_REGS", errno);
}

kvm_sregs Vcpu::sregs() const {
    kvm_sregs s{};
    if (::ioctl(fd_.get(), KVM_GET_SREGS, &s) != 0) throw_kvm_error("KVM_GET_SREGS", errno);
    return s;
}

void Vcpu::set_sregs(const kvm_sregs& s) {
    if (::ioctl(fd_.get(), KVM_SET_SREGS, &s) != 0) throw_kvm_error("KVM_SET_SREGS", errno);
}

void Vcpu::setup_long_mode(uint64_t cr3) {
    namespace L = boot_layout;
    kvm_sregs s = sregs();
    s.cs = flat_segment(L::kCodeSelector, kSegCodeExecReadAccessed, true);
    s.ds = s.es = s.fs = s.gs = s.ss = flat_segment(L::kDataSelector, kSegDataReadWriteAccessed, false);

    s.tr = kvm_segment{};
    s.tr.base = L::kTss;
    s.tr.limit = kTssLimit;
    s.tr.selector = L::kTssSelector;
    s.tr.type = kSegTss64Busy;
    s.tr.present = 1;
    s.ldt = kvm_segment{};
    s.ldt.unusable = 1;

    s.gdt.base = L::kGdt;
    s.gdt.limit = uint16_t(L::kTssSelector + 2 * sizeof(uint64_t) - 1);
    // An empty IDT: any exception before the kernel installs its own is a triple fault, which
    // KVM reports as KVM_EXIT_SHUTDOWN instead of running a garbage handler.
    s.idt.base = 0;
    s.idt.limit = 0;

    s.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
    s.cr3 = cr3;
    s.cr4 = kCr4Pae | kCr4Osfxsr | kCr4Osxmmexcpt;
    s.efer = kEferLme | kEferLma;
    set_sregs(s);
}

void Vcpu::setup_direct_entry(uint64_t rip, uint64_t boot_info_gpa) {
    kvm_regs r{};
    r.rip = rip;
    r.rdi = boot::kDirectMagic;
    r.rsi = boot_info_gpa;
    r.rflags = kRflagsFixed;
    // RSP = 0: a kernel that pushes before switching stacks faults at once (a shutdown) rather
    // than silently overwriting the VMM's boot data.
    r.rsp = 0;
    set_regs(r);
}

int Vcpu::raw_run() { return ::ioctl(fd_.get(), KVM_RUN, 0) == 0 ? 0 : -errno; }

int Vcpu::_run() {
    unblock_kick_in_this_thread();
    {
        std::lock_guard lock(runner_lock_);
        runner_ = pthread_self();
        in_run_ = true;
    }
    int rc;
    do {
        rc = raw_run();
        // EINTR that interrupt() did not ask for (a signal meant for the process that landed on
        // this thread): KVM_RUN is safe to re-enter.
    } while (rc == -EINTR && !interrupt_requested());
    std::lock_guard lock(runner_lock_);
    in_run_ = false;
    return rc;
}

void Vcpu::run() {
    int rc = _run();
    if (rc == -EINTR)
        throw std::system_error(EINTR, std::generic_category(), "KVM_RUN interrupted by Vcpu::interrupt()");
    if (rc < 0) throw_kvm_error("KVM_RUN", -rc);
}

void Vcpu::interrupt() {
    interrupt_requested_.store(true, std::memory_order_release);
    std::atomic_ref<uint8_t>(run_->immediate_exit).store(1, std::memory_order_release);
    std::lock_guard lock(runner_lock_);
    if (in_run_) pthread_kill(runner_, kick_signal());
}

void Vcpu::clear_interrupt() {
    std::atomic_ref<uint8_t>(run_->immediate_exit).store(0, std::memory_order_release);
    interrupt_requested_.store(false, std::memory_order_release);
}

}  // namespace fb
