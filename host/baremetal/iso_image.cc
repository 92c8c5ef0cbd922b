#include "host/baremetal/iso_image.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "common/config.h"
#include "host/qemu/qemu_guest.h"
#include "host/run/plan.h"
#include "host/run/runner.h"

extern char** environ;

namespace fb {
namespace fs = std::filesystem;

namespace {

constexpr const char* kInstallAll = "apt-get install grub-common grub-pc-bin xorriso mtools";

// Runs argv, returns its exit status (or -1 when it could not start) and its merged output.
int run_capture(const std::vector<std::string>& args, std::string& output) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe: {}", strerror(errno)));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    std::vector<char*> cargv;
    for (const auto& s : args) cargv.push_back(const_cast<char*>(s.c_str()));
    cargv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(pipefd[1]);
    if (rc != 0) {
        ::close(pipefd[0]);
        output = strerror(rc);
        return -1;
    }
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(pipefd[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (output.size() < (1u << 20)) output.append(buf, size_t(n));
    }
    ::close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string last_meaningful_line(const std::string& text) {
    std::string best;
    size_t from = 0;
    while (from < text.size()) {
        size_t nl = text.find('\n', from);
        std::string line = text.substr(from, nl == std::string::npos ? std::string::npos : nl - from);
        if (line.find_first_not_of(" \t\r") != std::string::npos) best = line;
        if (nl == std::string::npos) break;
        from = nl + 1;
    }
    return best.empty() ? "no output" : best;
}

// GRUB reads the Multiboot header from the first 8 KiB, 4-byte aligned, checksum included.
bool has_multiboot_header(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> head(8192);
    in.read(head.data(), std::streamsize(head.size()));
    size_t n = size_t(in.gcount());
    for (size_t at = 0; at + 12 <= n; at += 4) {
        uint32_t w[3];
        std::memcpy(w, head.data() + at, sizeof w);
        if (w[0] == 0x1BADB002u && uint32_t(w[0] + w[1] + w[2]) == 0) return true;
    }
    return false;
}

void check_tools() {
    if (QemuGuest::which("grub-mkrescue").empty())
        throw std::runtime_error(fmt::format("grub-mkrescue not found (package grub-common): install it with `{}`", kInstallAll));
    if (!fs::exists("/usr/lib/grub/i386-pc/modinfo.sh"))
        throw std::runtime_error(fmt::format("GRUB's BIOS modules (/usr/lib/grub/i386-pc) are missing (package grub-pc-bin): install them with `{}`", kInstallAll));
    if (QemuGuest::which("xorriso").empty())
        throw std::runtime_error(fmt::format("xorriso not found (package xorriso): install it with `{}`", kInstallAll));
    // grub-mkrescue builds a FAT EFI image with mformat whenever a UEFI platform is installed.
    bool efi = fs::exists("/usr/lib/grub/x86_64-efi") || fs::exists("/usr/lib/grub/i386-efi");
    if (efi && QemuGuest::which("mformat").empty())
        throw std::runtime_error(fmt::format("mformat not found (package mtools), which grub-mkrescue needs for the UEFI image: install it with `{}`", kInstallAll));
}

}  // namespace

std::string grub_cfg(const std::string& cmdline) {
    for (char c : cmdline)
        if (c < ' ' || c > '~' || c == '\'')
            throw std::invalid_argument("the guest command line must be printable ASCII without single quotes (it goes into grub.cfg)");
    Config config;
    ConfigError err = parse_config(Str(cmdline.c_str()), config);
    if (err.message) throw std::invalid_argument(fmt::format("bad guest configuration: {}: '{}'", err.message, std::string(err.token.p, err.token.n)));
    std::string words;
    size_t from = 0;
    while (from < cmdline.size()) {
        size_t sp = cmdline.find(' ', from);
        if (sp == std::string::npos) sp = cmdline.size();
        if (sp > from) words += fmt::format(" '{}'", cmdline.substr(from, sp - from));
        from = sp + 1;
    }
    return fmt::format(
        "# flushbench: boot the microkernel at once. Its console and its records go to COM1 at 115200 8N1;\n"
        "# GRUB talks on COM1 too, so a serial capture (IPMI SOL, null-modem cable) holds the whole boot.\n"
        "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set default=0\n"
        "set timeout=0\n"
        "set timeout_style=hidden\n"
        "menuentry \"flushbench guest kernel\" {{\n"
        "    echo \"flushbench: loading {}\"\n"
        "    multiboot {}{}\n"
        "    boot\n"
        "}}\n",
        kIsoKernelPath, kIsoKernelPath, words);
}

void build_iso(const std::string& guest_elf, const std::string& cmdline, const std::string& out_iso) {
    std::string cfg = grub_cfg(cmdline);
    if (!fs::exists(guest_elf)) throw std::invalid_argument(fmt::format("guest kernel {} not found: build it with `cmake --build build`", guest_elf));
    if (!has_multiboot_header(guest_elf))
        throw std::invalid_argument(fmt::format("{} has no Multiboot header in its first 8 KiB: GRUB cannot boot it (pass the flushbench guest ELF)", guest_elf));
    check_tools();

    std::string tmpl = (fs::temp_directory_path() / "flushbench-iso-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error(fmt::format("cannot create a temporary directory: {}", strerror(errno)));
    fs::path tree(tmpl);
    struct Cleanup {
        fs::path p;
        ~Cleanup() {
            std::error_code ec;
            fs::remove_all(p, ec);
        }
    } cleanup{tree};
    fs::path root = tree / "iso";
    fs::create_directories(root / "boot" / "grub");
    std::ofstream(root / "boot" / "grub" / "grub.cfg") << cfg;
    fs::copy_file(guest_elf, root / fs::path(kIsoKernelPath).relative_path());

    fs::path out(out_iso);
    if (out.has_parent_path()) {
        std::error_code ec;
        fs::create_directories(out.parent_path(), ec);
    }
    fs::path tmp_iso = out;
    tmp_iso += fmt::format(".{}.tmp", getpid());
    std::string output;
    int status = run_capture({"grub-mkrescue", "-o", tmp_iso.string(), root.string()}, output);
    if (status != 0 || !fs::exists(tmp_iso)) {
        std::error_code ec;
        fs::remove(tmp_iso, ec);
        if (status == -1) throw std::runtime_error(fmt::format("cannot run grub-mkrescue ({}): install it with `{}`", output, kInstallAll));
        throw std::runtime_error(fmt::format("grub-mkrescue failed (status {}): {}", status, last_meaningful_line(output)));
    }
    fs::rename(tmp_iso, out);
}

std::string image_cmdline(const RunOptions& o) {
    std::string cmdline = config_line(guest_config(o));
    grub_cfg(cmdline);  // validates
    return cmdline;
}

int run_image(const RunOptions& o) {
    if (o.out.empty()) {
        fmt::print(stderr, "flushbench: image needs --out FILE.iso\n");
        return kExitUsage;
    }
    std::string elf = o.image.empty() ? default_guest_image() : o.image;
    try {
        std::string cmdline = image_cmdline(o);
        build_iso(elf, cmdline, o.out);
        fmt::print(stderr,
                   "flushbench: {} boots {} with '{}'\n"
                   "  write it to a USB stick (dd if={} of=/dev/sdX bs=4M conv=fsync) or boot it over PXE, capture COM1 at\n"
                   "  115200 8N1 (ipmitool sol activate > run.log), then: flushbench import run.log --out results.json\n",
                   o.out, elf, cmdline, o.out);
    } catch (const std::invalid_argument& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitUsage;
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitEnvironment;
    }
    return kExitOk;
}

}  // namespace fb
