#include "host/vmm/vmm_guest.h"

#include <linux/kvm.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "common/boot.h"
#include "common/wire.h"
#include "common/x86/uart16550.h"
#include "host/vmm/elf_image.h"

namespace fb {
namespace {

using Clock = std::chrono::steady_clock;
using Kind = VmmOutcome::Kind;

namespace uart = x86::uart16550;
constexpr uint8_t kUartIdleLsr = uart::kLsrThre | uart::kLsrTemt;  // every byte is "sent" at once
constexpr uint8_t kUnclaimedRead = 0xff;  // what an ISA read that no device decodes returns

constexpr size_t kRecordHeader = offsetof(boot::RecordBuffer, data);
constexpr size_t kMaxRecord = std::min(sizeof(boot::RecordBuffer::data), wire::kMaxLine);

// stop() is only a flag, so it is safe in a signal handler; the watchdog thread polls it.
constexpr std::chrono::milliseconds kStopPollPeriod{20};

const char* internal_error_name(uint32_t suberror) {
    switch (suberror) {
        case KVM_INTERNAL_ERROR_EMULATION:
            return "emulation failure";
        case KVM_INTERNAL_ERROR_SIMUL_EX:
            return "exception while delivering an exception";
        case KVM_INTERNAL_ERROR_DELIVERY_EV:
            return "event delivery failed";
        case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
            return "unexpected hardware exit reason";
        default:
            return "unknown suberror";
    }
}

}  // namespace

const char* to_string(VmmOutcome::Kind k) {
    switch (k) {
        case Kind::exited:
            return "exited";
        case Kind::shutdown:
            return "shutdown";
        case Kind::halted:
            return "halted";
        case Kind::hung:
            return "hung";
        case Kind::crashed:
            return "crashed";
        case Kind::interrupted:
            return "interrupted";
    }
    return "?";
}

VmmGuest::VmmGuest(const ElfImage& image, VmmOptions opts, VmmEvents& events)
    : opts_(std::move(opts)),
      events_(events),
      vm_(Vm::create_with_one_vcpu(image, opts_.mem_bytes, opts_.cmdline)),
      vm_stats_(KvmStatsReader::for_vm(*vm_)),
      vcpu_stats_(KvmStatsReader::for_vcpu(*vm_, vm_->vcpu(0))) {
    if (opts_.migrate_every_ms.count() < 0) throw std::invalid_argument("migrate_every_ms must not be negative");
    if (opts_.migrate_every_ms.count() > 0 || opts_.migrate_every_exits > 0) {
        migrate_cpus_ = opts_.migrate_cpus.empty() ? allowed_cpus() : opts_.migrate_cpus;
        if (migrate_cpus_.size() < 2)
            throw std::invalid_argument(
                fmt::format("vCPU migration needs at least two CPUs, have {}: "
                            "give it more CPUs or turn migration off",
                            migrate_cpus_.size()));
        if (opts_.cpu) {
            auto it = std::find(migrate_cpus_.begin(), migrate_cpus_.end(), *opts_.cpu);
            if (it == migrate_cpus_.end())
                throw std::invalid_argument(fmt::format("start CPU {} is not among the migration CPUs", *opts_.cpu));
            migrate_index_ = size_t(it - migrate_cpus_.begin());
        }
    }
}

VmmGuest::~VmmGuest() = default;  // run() always joins the vCPU thread before it returns

int64_t VmmGuest::now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

VmmOutcome VmmGuest::run(std::chrono::milliseconds watchdog) {
    if (started_) throw std::logic_error("VmmGuest::run() called twice: boot a new VmmGuest per run");
    started_ = true;
    watchdog_ = watchdog;
    const auto start = Clock::now();
    touch();

    std::thread thread(&VmmGuest::vcpu_thread, this);
    std::exception_ptr watchdog_error;
    {
        std::unique_lock lock(done_lock_);
        bool interrupted = false;
        auto next_migration = start + opts_.migrate_every_ms;
        while (!done_) {
            auto now = Clock::now();
            auto wake = now + kStopPollPeriod;
            if (!interrupted) {
                auto last =
                    Clock::time_point(std::chrono::nanoseconds(last_activity_ns_.load(std::memory_order_relaxed)));
                if (stop_requested_.load(std::memory_order_relaxed)) {
                    request_interrupt(Kind::interrupted);
                    interrupted = true;
                } else if (now - last >= watchdog) {
                    request_interrupt(Kind::hung);
                    interrupted = true;
                } else {
                    wake = std::min(wake, last + watchdog);
                }
            }
            // Time-based migration moves the thread even while it sits in KVM_RUN; holding
            // done_lock_ keeps the thread (and its tid) alive across sched_setaffinity().
            if (!interrupted && opts_.migrate_every_ms.count() > 0) {
                if (now >= next_migration) {
                    try {
                        migrate(vcpu_tid_.load());
                    } catch (...) {
                        watchdog_error = std::current_exception();
                        request_interrupt(Kind::crashed);
                        interrupted = true;
                    }
                    next_migration = now + opts_.migrate_every_ms;
                }
                wake = std::min(wake, next_migration);
            }
            done_cv_.wait_until(lock, wake);
        }
    }
    thread.join();

    outcome_.wall = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    {
        std::lock_guard lock(migrate_lock_);
        outcome_.migrations = migrations_;
        outcome_.cpus_used = cpus_used_;
    }
    if (handler_error_) std::rethrow_exception(handler_error_);
    if (watchdog_error) std::rethrow_exception(watchdog_error);
    return outcome_;
}

void VmmGuest::request_interrupt(VmmOutcome::Kind why) {
    interrupt_reason_.store(int(why), std::memory_order_release);
    vcpu().interrupt();
}

void VmmGuest::migrate(pid_t tid) {
    std::lock_guard lock(migrate_lock_);
    if (tid == 0) return;  // the vCPU thread has not started yet
    migrate_index_ = (migrate_index_ + 1) % migrate_cpus_.size();
    int cpu = migrate_cpus_[migrate_index_];
    pin_thread(tid, cpu);
    ++migrations_;
    cpus_used_.push_back(cpu);
}

void VmmGuest::hop() {
    // sched_setaffinity() on itself moves the thread before the call returns, so the next KVM_RUN
    // loads the vCPU on the new CPU.
    hop_index_ = (hop_index_ + 1) % opts_.hop_cpus.size();
    pin_current_thread(opts_.hop_cpus[hop_index_]);
}

void VmmGuest::vcpu_thread() {
    vcpu_tid_.store(gettid());
    try {
        std::optional<int> first_cpu = opts_.cpu;
        if (!migrate_cpus_.empty()) first_cpu = migrate_cpus_[migrate_index_];
        if (!opts_.hop_cpus.empty()) first_cpu = opts_.hop_cpus.front();
        if (first_cpu) {
            pin_current_thread(*first_cpu);
            std::lock_guard lock(migrate_lock_);
            cpus_used_.push_back(*first_cpu);
        }
        Vcpu& v = vcpu();
        for (;;) {
            int rc = v._run();
            if (rc == -EINTR) {
                ++outcome_.exits.interrupted;
                if (interrupt_reason_.load(std::memory_order_acquire) == int(Kind::hung))
                    finish(Kind::hung, fmt::format("no serial byte or record for {} ms; vCPU stopped{}",
                                                   watchdog_.count(), rip_note()));
                else if (interrupt_reason_.load(std::memory_order_acquire) == int(Kind::crashed))
                    finish(Kind::crashed, "the host stopped the vCPU after an error of its own");
                else
                    finish(Kind::interrupted, "stopped by request" + rip_note());
                break;
            }
            if (rc < 0) {
                finish(Kind::crashed,
                       fmt::format("KVM_RUN failed: {}{}", std::generic_category().message(-rc), rip_note()));
                break;
            }
            if (!handle_exit(v.run_state())) break;
            if (opts_.migrate_every_exits && ++exits_since_migration_ >= opts_.migrate_every_exits) {
                exits_since_migration_ = 0;
                migrate(vcpu_tid_.load());
            }
        }
    } catch (...) {
        handler_error_ = std::current_exception();
    }
    {
        std::lock_guard lock(done_lock_);
        done_ = true;
    }
    done_cv_.notify_all();
}

bool VmmGuest::handle_exit(kvm_run& run) {
    switch (run.exit_reason) {
        case KVM_EXIT_IO: {
            const uint64_t bytes = uint64_t(run.io.size) * run.io.count;
            const size_t area = vcpu().run_state_bytes();
            if (run.io.data_offset > area || bytes > area - run.io.data_offset) {
                finish(Kind::crashed,
                       fmt::format("KVM_EXIT_IO data ({:#x}+{:#x}) lies outside kvm_run", run.io.data_offset, bytes));
                return false;
            }
            uint8_t* data = reinterpret_cast<uint8_t*>(&run) + run.io.data_offset;
            const bool out = run.io.direction == KVM_EXIT_IO_OUT;
            const uint16_t port = run.io.port;
            if (port >= boot::kCom1 && port < boot::kCom1 + uart::kRegisters) {
                handle_uart(uint16_t(port - boot::kCom1), out, data, run.io.size, run.io.count);
                return true;
            }
            if (port == boot::kRecordPort && out) {
                ++outcome_.exits.record;
                if (run.io.size != sizeof(uint32_t)) {
                    protocol_error(
                        fmt::format("{}-byte OUT to the record port; it takes a 4-byte address", run.io.size));
                    return true;
                }
                for (uint32_t i = 0; i < run.io.count; ++i) {
                    uint32_t addr;
                    std::memcpy(&addr, data + size_t(i) * sizeof addr, sizeof addr);
                    handle_record(addr);
                }
                return true;
            }
            if (port == boot::kHopPort && out) {
                ++outcome_.exits.hop;
                if (opts_.hop_cpus.empty()) protocol_error("OUT to the hop port, but this VM has no hop set");
                else hop();
                return true;
            }
            if (port == boot::kExitPort && out) {
                ++outcome_.exits.exit_port;
                uint32_t code = 0;  // isa-debug-exit takes any width; zero-extend
                std::memcpy(&code, data, std::min<size_t>(run.io.size, sizeof code));
                outcome_.exit_code = code;
                finish(Kind::exited, fmt::format("guest wrote {} to the exit port", code));
                return false;
            }
            ++outcome_.exits.io_other;
            if (!out) std::memset(data, kUnclaimedRead, bytes);
            return true;
        }
        case KVM_EXIT_MMIO:
            ++outcome_.exits.mmio;
            if (!run.mmio.is_write)
                std::memset(run.mmio.data, kUnclaimedRead, std::min<size_t>(run.mmio.len, sizeof run.mmio.data));
            return true;
        case KVM_EXIT_HLT:
            // No in-kernel LAPIC, so HLT comes to userspace, and with IF = 0 nothing would wake it.
            finish(Kind::halted, "guest executed HLT without writing the exit port" + rip_note());
            return false;
        case KVM_EXIT_SHUTDOWN:
            finish(Kind::shutdown,
                   "triple fault or shutdown: an exception with no usable IDT, or a fault delivering one" + rip_note());
            return false;
        case KVM_EXIT_FAIL_ENTRY:
            finish(Kind::crashed, fmt::format("KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason={:#x} on CPU {}",
                                              run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu));
            return false;
        case KVM_EXIT_INTERNAL_ERROR: {
            std::string data;
            const auto& ef = run.emulation_failure;
            if (run.internal.suberror == KVM_INTERNAL_ERROR_EMULATION &&
                (ef.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
                // The bytes KVM's emulator fetched and gave up on: names the instruction.
                data = "instruction bytes";
                for (size_t i = 0; i < std::min<size_t>(ef.insn_size, sizeof ef.insn_bytes); ++i)
                    data += fmt::format(" {:02x}", ef.insn_bytes[i]);
            } else {
                data = "data";
                for (uint32_t i = 0; i < std::min<uint32_t>(run.internal.ndata, std::size(run.internal.data)); ++i)
                    data += fmt::format(" {:#x}", run.internal.data[i]);
            }
            finish(Kind::crashed, fmt::format("KVM_EXIT_INTERNAL_ERROR suberror {} ({}), {}{}", run.internal.suberror,
                                              internal_error_name(run.internal.suberror), data, rip_note()));
            return false;
        }
        case KVM_EXIT_INTR:  // a signal arrived after the guest exited; nothing to do
            ++outcome_.exits.other;
            return true;
        default:
            finish(Kind::crashed, fmt::format("unexpected KVM exit reason {}{}", run.exit_reason, rip_note()));
            return false;
    }
}

void VmmGuest::handle_uart(uint16_t offset, bool out, uint8_t* data, uint32_t size, uint32_t count) {
    std::string text;
    for (uint32_t i = 0; i < count; ++i) {
        uint8_t* elem = data + size_t(i) * size;
        if (out) {
            // Only the low byte reaches an 8-bit UART; IER, FCR, MCR and the divisor mean nothing
            // to a UART that "sends" every byte at once.
            const uint8_t v = elem[0];
            if (offset == uart::kData && !(lcr_ & uart::kLcrDlab))
                text.push_back(char(v));
            else if (offset == uart::kLcr)
                lcr_ = v;
            else if (offset == uart::kScr)
                scr_ = v;
            continue;
        }
        std::memset(elem, 0, size);
        switch (offset) {
            case uart::kLsr:
                elem[0] = kUartIdleLsr;
                break;
            case uart::kIir:
                elem[0] = uart::kIirNoInterruptPending;
                break;
            case uart::kLcr:
                elem[0] = lcr_;
                break;
            case uart::kScr:
                elem[0] = scr_;
                break;
            default:
                break;
        }
    }
    if (text.empty()) {
        ++outcome_.exits.uart_other;
        return;
    }
    ++outcome_.exits.serial;
    touch();
    events_.on_serial(text);
    touch();  // the guest could not speak while the handler ran: that silence is not its own
}

void VmmGuest::handle_record(uint32_t addr) {
    const uint8_t* header = vm_->try_gpa(addr, kRecordHeader);
    if (!header) return protocol_error(fmt::format("record buffer at {:#x} is outside guest RAM", addr));
    uint32_t len;
    std::memcpy(&len, header, sizeof len);
    if (len > kMaxRecord) return protocol_error(fmt::format("record of {} bytes, the limit is {}", len, kMaxRecord));
    const uint8_t* body = vm_->try_gpa(uint64_t(addr) + kRecordHeader, len);
    if (!body) return protocol_error(fmt::format("record buffer at {:#x} runs past the end of guest RAM", addr));
    // A copy: the handler's view must not change under it, whatever the guest does next.
    std::string line(reinterpret_cast<const char*>(body), len);
    touch();
    events_.on_record(line);
    touch();
}

void VmmGuest::protocol_error(std::string what) {
    ++outcome_.protocol_errors;
    outcome_.last_protocol_error = std::move(what);
}

void VmmGuest::finish(VmmOutcome::Kind kind, std::string detail) {
    outcome_.kind = kind;
    outcome_.detail = std::move(detail);
}

std::string VmmGuest::rip_note() {
    try {
        return fmt::format(" at rip={:#x}", vcpu().regs().rip);
    } catch (const std::exception&) {
        return "";
    }
}

}  // namespace fb
