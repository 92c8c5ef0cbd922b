// Launches the guest kernel under qemu-system-x86_64 (KVM or TCG) and streams its serial output.
// QEMU runs in its own process group and dies with us (PR_SET_PDEATHSIG); a guest that goes
// silent for longer than the watchdog allows is killed, group and all, and reported hung.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fb {

struct QemuOptions {
    std::string qemu = "qemu-system-x86_64";
    std::string image;                    // the guest ELF
    std::string machine = "microvm";      // microvm boots PVH; pc and q35 boot Multiboot
    bool kvm = false;                     // -accel kvm, else TCG (timings emulated)
    std::string cpu;                      // empty: host,-arch-capabilities on KVM, QEMU's default on TCG
    uint64_t mem_mib = 512;
    std::string cmdline;
    std::vector<std::string> vfio_pci;    // BDFs to pass through (QEMU adds them to its KVM-VFIO device)
    int pin_cpu = -1;                     // host CPU for the whole QEMU process, -1 = any
};

struct QemuOutcome {
    enum class Kind { exited, hung, reset, killed, interrupted, failed };
    Kind kind = Kind::failed;
    int guest_exit_code = -1;  // the value written to isa-debug-exit, when kind == exited
    std::string detail;        // what happened, in one line (QEMU's stderr when it failed)
    std::chrono::microseconds first_output{0};  // launch to first serial byte
    std::chrono::microseconds wall{0};
};

const char* to_string(QemuOutcome::Kind k);

class QemuGuest {
public:
    explicit QemuGuest(QemuOptions opts);

    // The argv that run() executes (for logs and the results' context).
    std::vector<std::string> argv() const;

    using OutputFn = std::function<void(std::string_view bytes)>;
    // Called with the time since the last output; returns true to kill QEMU as hung.
    using WatchdogFn = std::function<bool(std::chrono::milliseconds silent)>;

    // Boots and waits. Never throws for guest behaviour; throws std::runtime_error only when QEMU
    // cannot be started at all (missing binary, bad image path).
    QemuOutcome run(const OutputFn& on_output, const WatchdogFn& watchdog);

    // From another thread or a signal handler's flag: kill QEMU, outcome interrupted.
    void stop() { stop_requested_ = true; }

    // QEMU loads a Multiboot image as Multiboot even on microvm; PVH needs a copy of the kernel
    // with its Multiboot magic blanked (every other byte identical). Returns that copy's path.
    static std::string pvh_image(const std::string& image);
    // Finds `name` on PATH; empty when absent.
    static std::string which(const std::string& name);

private:
    QemuOptions opts_;
    std::atomic<bool> stop_requested_{false};
};

}  // namespace fb
