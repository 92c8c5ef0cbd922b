#include "host/qemu/qemu_guest.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <fmt/format.h>

#include "common/boot.h"
#include "host/sys/cpus.h"

namespace fb {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char* to_string(QemuOutcome::Kind k) {
    switch (k) {
        case QemuOutcome::Kind::exited: return "exited";
        case QemuOutcome::Kind::hung: return "hung";
        case QemuOutcome::Kind::reset: return "reset";
        case QemuOutcome::Kind::killed: return "killed";
        case QemuOutcome::Kind::interrupted: return "interrupted";
        case QemuOutcome::Kind::failed: return "failed";
    }
    return "?";
}

QemuGuest::QemuGuest(QemuOptions opts) : opts_(std::move(opts)) {}

std::string QemuGuest::which(const std::string& name) {
    if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : std::string();
    const char* path = getenv("PATH");
    std::string dirs = path ? path : "/usr/bin:/bin";
    size_t start = 0;
    while (start <= dirs.size()) {
        size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        std::string candidate = dirs.substr(start, end - start) + "/" + name;
        if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
        start = end + 1;
    }
    return {};
}

std::string QemuGuest::pvh_image(const std::string& image) {
    std::ifstream in(image, std::ios::binary);
    if (!in) throw std::runtime_error(fmt::format("guest image {} not found: build it with `cmake --build build`", image));
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Multiboot v1 magic, little-endian, searched where loaders search: the first 8 KiB.
    const std::string magic("\x02\xb0\xad\x1b", 4);
    size_t at = bytes.substr(0, 8192).find(magic);
    if (at != std::string::npos) bytes.replace(at, 4, std::string(4, '\0'));
    auto out = fs::temp_directory_path() / fmt::format("flushbench-pvh-{}-{}.elf", getuid(), std::hash<std::string>{}(bytes));
    if (!fs::exists(out)) {
        auto tmp = out;
        tmp += fmt::format(".{}", getpid());
        std::ofstream(tmp, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
        fs::rename(tmp, out);
    }
    return out.string();
}

std::vector<std::string> QemuGuest::argv() const {
    bool pvh = opts_.machine == "microvm";
    std::vector<std::string> a = {opts_.qemu, "-M", opts_.machine, "-m", fmt::format("{}M", opts_.mem_mib)};
    if (opts_.kvm) {
        // Plain -cpu host aborts on some KVMs reading MSR 0x10a (arch capabilities); dropping it
        // costs nothing the benchmark uses.
        a.insert(a.end(), {"-accel", "kvm", "-cpu", opts_.cpu.empty() ? "host,-arch-capabilities" : opts_.cpu});
    } else {
        a.insert(a.end(), {"-accel", "tcg"});
        if (!opts_.cpu.empty()) a.insert(a.end(), {"-cpu", opts_.cpu});
    }
    a.insert(a.end(), {"-kernel", pvh ? pvh_image(opts_.image) : opts_.image, "-append", opts_.cmdline,
                       "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-nodefaults",
                       "-device", fmt::format("isa-debug-exit,iobase={:#x},iosize=4", boot::kExitPort)});
    for (const auto& bdf : opts_.vfio_pci) a.insert(a.end(), {"-device", fmt::format("vfio-pci,host={}", bdf)});
    return a;
}

QemuOutcome QemuGuest::run(const OutputFn& on_output, const WatchdogFn& watchdog) {
    if (which(opts_.qemu).empty())
        throw std::runtime_error(fmt::format("{} not found: install it with `apt-get install qemu-system-x86`", opts_.qemu));
    if (!fs::exists(opts_.image))
        throw std::runtime_error(fmt::format("guest image {} not found: build it with `cmake --build build`", opts_.image));
    auto args = argv();

    int out_pipe[2], err_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)) throw std::runtime_error(fmt::format("pipe: {}", strerror(errno)));
    auto start = Clock::now();
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", strerror(errno)));
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // QEMU must not outlive a killed flushbench
        if (getppid() != parent) _exit(127);
        if (opts_.pin_cpu >= 0) try_pin(0, opts_.pin_cpu);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        std::vector<char*> cargv;
        for (auto& s : args) cargv.push_back(s.data());
        cargv.push_back(nullptr);
        execvp(cargv[0], cargv.data());
        _exit(127);
    }
    setpgid(pid, pid);
    close(out_pipe[1]);
    close(err_pipe[1]);

    QemuOutcome outcome;
    std::string err_text;
    auto last_output = Clock::now();
    bool got_output = false, killed_hung = false, killed_stop = false;
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds > 0) {
        int n = poll(fds, 2, 100);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
                continue;
            }
            if (i == 0) {
                if (!got_output) outcome.first_output = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
                got_output = true;
                last_output = Clock::now();
                on_output(std::string_view(buf, size_t(got)));
            } else if (err_text.size() < 4096) {
                err_text.append(buf, size_t(got));
            }
        }
        if (killed_hung || killed_stop) continue;
        auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_output);
        if (stop_requested_) {
            killed_stop = true;
            kill(-pid, SIGKILL);
        } else if (watchdog && watchdog(silent)) {
            killed_hung = true;
            kill(-pid, SIGKILL);
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) close(f.fd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    kill(-pid, SIGKILL);  // anything QEMU left in its group
    outcome.wall = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    while (!err_text.empty() && (err_text.back() == '\n' || err_text.back() == '\r')) err_text.pop_back();

    if (killed_stop) {
        outcome.kind = QemuOutcome::Kind::interrupted;
        outcome.detail = "stopped on request";
    } else if (killed_hung) {
        outcome.kind = QemuOutcome::Kind::hung;
        outcome.detail = "guest stopped producing output; QEMU killed by the watchdog";
    } else if (WIFSIGNALED(status)) {
        outcome.kind = QemuOutcome::Kind::killed;
        outcome.detail = fmt::format("QEMU killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && !got_output) {
        outcome.kind = QemuOutcome::Kind::failed;
        outcome.detail = fmt::format("could not execute {}", args[0]);
    } else if (WIFEXITED(status) && (WEXITSTATUS(status) & 1) && boot::is_exit_code(uint32_t(WEXITSTATUS(status)) >> 1)) {
        // isa-debug-exit: QEMU exits with (value << 1) | 1.
        outcome.kind = QemuOutcome::Kind::exited;
        outcome.guest_exit_code = WEXITSTATUS(status) >> 1;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        // -no-reboot turns a triple fault (or any reset) into a clean QEMU exit without a code.
        outcome.kind = QemuOutcome::Kind::reset;
        outcome.detail = "guest reset without writing an exit code (triple fault?)";
    } else {
        outcome.kind = QemuOutcome::Kind::failed;
        outcome.detail = fmt::format("QEMU exited with status {}: {}", WEXITSTATUS(status), err_text.empty() ? "no message" : err_text);
    }
    if (!err_text.empty() && outcome.kind != QemuOutcome::Kind::failed) outcome.detail += fmt::format(" [qemu: {}]", err_text.substr(0, 300));
    return outcome;
}

}  // namespace fb
