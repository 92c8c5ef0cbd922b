// flushbench's own VMM on the real /dev/kvm: ELF loading, the VM's memory bounds, the KVM-VFIO
// device, binary stats, and tiny hand-assembled guests that exercise each exit the VMM handles.
// Tests that need /dev/kvm skip with the reason when it cannot be opened.
// About 540 lines: one suite per VMM concern would repeat the hand-assembled guest fixtures.
#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/boot.h"
#include "host/vmm/elf_image.h"
#include "host/vmm/kvm_stats.h"
#include "host/vmm/kvm_vfio_device.h"
#include "host/vmm/vcpu.h"
#include "host/vmm/vm.h"
#include "host/vmm/vmm_guest.h"

namespace fb {
namespace {

using namespace std::chrono_literals;
using Kind = VmmOutcome::Kind;

constexpr uint64_t kTinyRam = 4ull << 20;  // the image at 1 MiB plus room
constexpr size_t kElfImageOffset = 0x1000;
constexpr uint64_t kRecordOffset = 0x800;  // RecordBuffer within a tiny image

// ---- helpers -------------------------------------------------------------------------------

// A minimal ET_EXEC with one RWX PT_LOAD holding `image` at `base`.
std::vector<uint8_t> make_elf(const std::vector<uint8_t>& image, uint64_t base = boot::kImageBase,
                              uint64_t entry = boot::kImageBase) {
    std::vector<uint8_t> f(kElfImageOffset + image.size());
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 1;
    Elf64_Phdr ph{};
    ph.p_type = PT_LOAD;
    ph.p_flags = PF_R | PF_W | PF_X;
    ph.p_offset = kElfImageOffset;
    ph.p_vaddr = ph.p_paddr = base;
    ph.p_filesz = ph.p_memsz = image.size();
    ph.p_align = 0x1000;
    std::memcpy(f.data(), &eh, sizeof eh);
    std::memcpy(f.data() + sizeof eh, &ph, sizeof ph);
    std::memcpy(f.data() + kElfImageOffset, image.data(), image.size());
    return f;
}

template <typename T>
void poke(std::vector<uint8_t>& f, size_t offset, T v) {
    std::memcpy(f.data() + offset, &v, sizeof v);
}

ElfImage tiny_guest(std::vector<uint8_t> code, std::string_view record = {}) {
    std::vector<uint8_t> image(kElfImageOffset, 0);
    std::copy(code.begin(), code.end(), image.begin());
    if (!record.empty()) {
        boot::RecordBuffer rb{};
        rb.len = uint32_t(record.size());
        std::memcpy(rb.data, record.data(), record.size());
        std::memcpy(image.data() + kRecordOffset, &rb, sizeof rb.len + sizeof rb.reserved + record.size());
    }
    return ElfImage::parse(make_elf(image), "tiny-guest");
}

VmmOptions tiny_options() {
    VmmOptions o;
    o.mem_bytes = kTinyRam;
    return o;
}

struct TempFile {
    std::string path;
    explicit TempFile(const std::vector<uint8_t>& bytes) {
        char name[] = "/tmp/flushbench-kvm-test-XXXXXX";
        int fd = mkstemp(name);
        if (fd < 0) throw std::runtime_error("mkstemp");
        path = name;
        if (!bytes.empty() && write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size()))
            throw std::runtime_error("write");
        close(fd);
    }
    ~TempFile() { unlink(path.c_str()); }
};

struct Collector : VmmEvents {
    std::string serial;
    std::vector<std::string> records;
    std::function<void(std::string_view)> on_record_hook;
    void on_serial(std::string_view bytes) override { serial += bytes; }
    void on_record(std::string_view line) override {
        records.emplace_back(line);
        if (on_record_hook) on_record_hook(line);
    }
};

class Kvm : public testing::Test {
protected:
    void SetUp() override {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) GTEST_SKIP() << "/dev/kvm: " << strerror(errno);
        close(fd);
    }
};

// ---- ElfImage ------------------------------------------------------------------------------

std::string parse_error(const std::vector<uint8_t>& f) {
    try {
        ElfImage::parse(f, "test.elf");
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "";
}

TEST(ElfImage, AcceptsMinimalExecutable) {
    std::vector<uint8_t> code = {0xf4};
    ElfImage img = ElfImage::parse(make_elf(code), "ok.elf");
    EXPECT_EQ(img.entry(), boot::kImageBase);
    ASSERT_EQ(img.segments().size(), 1u);
    EXPECT_EQ(img.segments()[0].paddr, boot::kImageBase);
    EXPECT_EQ(img.segments()[0].bytes, code);
}

TEST(ElfImage, RejectsGarbageAndTruncation) {
    std::vector<uint8_t> good = make_elf({0xf4, 0xf4, 0xf4, 0xf4});
    EXPECT_NE(parse_error({}), "");
    std::vector<uint8_t> garbage(200, 'x');
    EXPECT_NE(parse_error(garbage).find("no ELF magic"), std::string::npos);
    // Cut inside the program headers, then inside the segment's bytes.
    EXPECT_NE(parse_error({good.begin(), good.begin() + 80}).find("program headers"), std::string::npos);
    EXPECT_NE(parse_error({good.begin(), good.end() - 1}).find("truncated"), std::string::npos);
}

TEST(ElfImage, RejectsBadHeaderFields) {
    const std::vector<uint8_t> good = make_elf({0xf4});
    auto with = [&](auto edit) {
        std::vector<uint8_t> f = good;
        edit(f);
        return parse_error(f);
    };
    EXPECT_NE(with([](auto& f) { f[EI_CLASS] = ELFCLASS32; }), "");
    EXPECT_NE(with([](auto& f) { poke<uint16_t>(f, offsetof(Elf64_Ehdr, e_machine), EM_386); }).find("EM_X86_64"),
              std::string::npos);
    EXPECT_NE(with([](auto& f) { poke<uint16_t>(f, offsetof(Elf64_Ehdr, e_type), ET_DYN); }), "");
    EXPECT_NE(with([](auto& f) { poke<uint16_t>(f, offsetof(Elf64_Ehdr, e_phentsize), 32); }), "");
    EXPECT_NE(with([](auto& f) { poke<uint16_t>(f, offsetof(Elf64_Ehdr, e_phnum), 0); }), "");
    // Offsets chosen so that naive "offset + size <= file size" arithmetic would wrap.
    EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, offsetof(Elf64_Ehdr, e_phoff), ~uint64_t{0} - 8); }), "");
    const size_t ph = sizeof(Elf64_Ehdr);
    EXPECT_NE(with([&](auto& f) { poke<uint64_t>(f, ph + offsetof(Elf64_Phdr, p_offset), ~uint64_t{0}); }), "");
    EXPECT_NE(
        with([&](auto& f) { poke<uint64_t>(f, ph + offsetof(Elf64_Phdr, p_filesz), 2); }).find("p_filesz > p_memsz"),
        std::string::npos);
    EXPECT_NE(with([&](auto& f) { poke<uint64_t>(f, ph + offsetof(Elf64_Phdr, p_paddr), ~uint64_t{0}); }), "");
    EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, offsetof(Elf64_Ehdr, e_entry), 0x200000); }).find("entry point"),
              std::string::npos);
}

TEST(ElfImage, LoadNamesTheFix) {
    try {
        ElfImage::load("/nonexistent/flushbench-guest.elf");
        FAIL() << "no exception";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("not found: build it with cmake --build"), std::string::npos) << e.what();
    }
    TempFile empty({});
    EXPECT_THROW(ElfImage::load(empty.path), std::runtime_error);
    TempFile good(make_elf({0xf4}));
    EXPECT_EQ(ElfImage::load(good.path).entry(), boot::kImageBase);
    EXPECT_THROW(ElfImage::load("/tmp"), std::runtime_error);
}

// ---- Vm --------------------------------------------------------------------------------------

TEST_F(Kvm, VmMemoryBoundsAreStrict) {
    Vm vm(kTinyRam);
    EXPECT_NE(vm.gpa(0, 1), nullptr);
    EXPECT_NE(vm.gpa(0, kTinyRam), nullptr);
    EXPECT_NE(vm.gpa(kTinyRam - 1, 1), nullptr);
    EXPECT_NE(vm.gpa(kTinyRam, 0), nullptr);
    EXPECT_THROW(vm.gpa(kTinyRam, 1), std::out_of_range);
    EXPECT_THROW(vm.gpa(kTinyRam - 1, 2), std::out_of_range);
    EXPECT_THROW(vm.gpa(1, kTinyRam), std::out_of_range);
    EXPECT_THROW(vm.gpa(~0ull, 2), std::out_of_range);
    EXPECT_THROW(vm.gpa(2, ~size_t{0}), std::out_of_range);
    EXPECT_EQ(vm.try_gpa(~0ull - 1, 4), nullptr);
    EXPECT_EQ(vm.try_gpa(kTinyRam, 1), nullptr);
}

TEST_F(Kvm, VmRejectsBadSizes) {
    EXPECT_THROW(Vm(0), std::invalid_argument);
    EXPECT_THROW(Vm(4097), std::invalid_argument);
    EXPECT_THROW(Vm(Vm::kMaxMemBytes + Vm::kPageBytes), std::invalid_argument);
}

TEST_F(Kvm, DirectBootDataFollowsTheContract) {
    Vm vm(kTinyRam);
    vm.setup_direct_boot("patterns=nop");
    boot::BootInfo info;
    std::memcpy(&info, vm.gpa(boot_layout::kBootInfo, sizeof info), sizeof info);
    EXPECT_EQ(info.magic, boot::kDirectMagic);
    EXPECT_EQ(info.version, boot::kBootInfoVersion);
    EXPECT_EQ(info.mem_bytes, kTinyRam);
    EXPECT_EQ(info.record_port, boot::kRecordPort);
    EXPECT_EQ(info.cmdline_len, 12u);
    EXPECT_STREQ(reinterpret_cast<const char*>(vm.gpa(info.cmdline_addr, info.cmdline_len + 1)), "patterns=nop");
    // The last PD entry maps 1 GiB - 2 MiB, present | writable | 2 MiB.
    uint64_t pde;
    std::memcpy(&pde, vm.gpa(boot_layout::kPd + 511 * 8, 8), 8);
    EXPECT_EQ(pde, (1ull << 30) - (2ull << 20) + 0x83);

    EXPECT_NO_THROW(vm.setup_direct_boot(std::string(boot_layout::kMaxCmdline, 'a')));
    EXPECT_THROW(vm.setup_direct_boot(std::string(boot_layout::kMaxCmdline + 1, 'a')), std::invalid_argument);
}

TEST_F(Kvm, LoadElfChecksPlacement) {
    Vm vm(kTinyRam);
    EXPECT_THROW(vm.load_elf(ElfImage::parse(make_elf({0xf4}, 0x2000, 0x2000), "low")), std::runtime_error);
    EXPECT_THROW(vm.load_elf(ElfImage::parse(make_elf({0xf4}, kTinyRam, kTinyRam), "high")), std::runtime_error);
    vm.load_elf(ElfImage::parse(make_elf({0xf4, 0x90}), "ok"));
    EXPECT_EQ(*vm.gpa(boot::kImageBase + 1, 1), 0x90);
}

// ---- KVM-VFIO device -------------------------------------------------------------------------

TEST_F(Kvm, VfioDeviceRejectsNonVfioFiles) {
    Vm vm(kTinyRam);
    ASSERT_TRUE(KvmVfioDevice::supported(vm));
    KvmVfioDevice dev(vm);
    EXPECT_GE(dev.fd(), 0);
    EXPECT_TRUE(dev.has_attr(KvmVfioDevice::kGroupFile, KvmVfioDevice::kFileAdd));
    EXPECT_TRUE(dev.has_attr(KvmVfioDevice::kGroupFile, KvmVfioDevice::kFileDel));
    EXPECT_FALSE(dev.has_attr(KvmVfioDevice::kGroupFile + 100, KvmVfioDevice::kFileAdd));

    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    ASSERT_GE(null_fd, 0);
    try {
        dev.add_file(null_fd);
        ADD_FAILURE() << "add_file(/dev/null) succeeded";
    } catch (const KvmVfioError& e) {
        EXPECT_EQ(e.kind(), VfioFileError::not_vfio_file) << e.what();
        EXPECT_EQ(e.error_number(), EINVAL);
        EXPECT_NE(std::string(e.what()).find(
                      "(/dev/null) is not a VFIO group or device file (kernel said EINVAL): pass /dev/vfio/N"),
                  std::string::npos)
            << e.what();
    }
    int pipe_fds[2];
    ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    try {
        dev.add_file(pipe_fds[0]);
        ADD_FAILURE() << "add_file(pipe) succeeded";
    } catch (const KvmVfioError& e) {
        EXPECT_EQ(e.kind(), VfioFileError::not_vfio_file) << e.what();
    }
    try {
        dev.del_file(null_fd);
        ADD_FAILURE() << "del_file of a never-added file succeeded";
    } catch (const KvmVfioError& e) {
        EXPECT_EQ(e.kind(), VfioFileError::not_added) << e.what();
    }
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    close(null_fd);
    try {
        dev.add_file(null_fd);  // closed now
        ADD_FAILURE() << "add_file(closed fd) succeeded";
    } catch (const KvmVfioError& e) {
        EXPECT_EQ(e.kind(), VfioFileError::bad_fd) << e.what();
    }
    // KVM allows one KVM-VFIO device per VM.
    EXPECT_THROW(KvmVfioDevice{vm}, std::runtime_error);
}

// ---- Binary stats ----------------------------------------------------------------------------

TEST_F(Kvm, BinaryStatsHaveExits) {
    Vm vm(kTinyRam);
    Vcpu& vcpu = vm.add_vcpu();
    auto vm_reader = KvmStatsReader::for_vm(vm);
    auto vcpu_reader = KvmStatsReader::for_vcpu(vm, vcpu);
    KvmStats vs = vcpu_reader.snapshot();
    if (!vcpu_reader.available()) {
        EXPECT_FALSE(vs.unavailable.empty());
        GTEST_SKIP() << "binary stats unavailable: " << vs.unavailable;
    }
    EXPECT_TRUE(vs.unavailable.empty());
    EXPECT_TRUE(vs.values.count("exits")) << "vCPU stats id " << vs.id;
    EXPECT_NE(vs.id.find("vcpu"), std::string::npos) << vs.id;
    KvmStats ms = vm_reader.snapshot();
    EXPECT_TRUE(ms.unavailable.empty()) << ms.unavailable;
    EXPECT_FALSE(ms.values.empty());
}

// ---- Tiny guests -------------------------------------------------------------------------------

// out 'h','i' to COM1; OUT32 of a RecordBuffer's address to the record port; out to 0x80; OUT32 0
// to the exit port; hlt (never reached).
const std::vector<uint8_t> kHelloGuest = {
    0x66, 0xba, 0xf8, 0x03,        // mov dx, 0x3f8
    0xb0, 'h',  0xee,              // mov al, 'h'; out dx, al
    0xb0, 'i',  0xee,              // mov al, 'i'; out dx, al
    0x66, 0xba, 0xb0, 0x0f,        // mov dx, 0xfb0
    0xb8, 0x00, 0x08, 0x10, 0x00,  // mov eax, 0x100800 (kImageBase + kRecordOffset)
    0xef,                          // out dx, eax
    0xe6, 0x80,                    // out 0x80, al
    0x66, 0xba, 0xf4, 0x00,        // mov dx, 0xf4
    0x31, 0xc0,                    // xor eax, eax
    0xef,                          // out dx, eax
    0xf4,                          // hlt
};
constexpr std::string_view kRecord = "FB1 hello x=1 #00000000\n";

TEST_F(Kvm, HelloGuestTalksOnEveryPort) {
    Collector ev;
    VmmGuest g(tiny_guest(kHelloGuest, kRecord), tiny_options(), ev);
    VmmOutcome o = g.run(2s);
    EXPECT_EQ(o.kind, Kind::exited) << o.detail;
    EXPECT_EQ(o.exit_code, 0u);
    EXPECT_EQ(ev.serial, "hi");
    ASSERT_EQ(ev.records.size(), 1u);
    EXPECT_EQ(ev.records[0], kRecord);
    EXPECT_EQ(o.exits.serial, 2u);
    EXPECT_EQ(o.exits.record, 1u);
    EXPECT_EQ(o.exits.io_other, 1u);
    EXPECT_EQ(o.exits.exit_port, 1u);
    EXPECT_EQ(o.protocol_errors, 0u);
    EXPECT_LT(o.wall, 1s);
}

TEST_F(Kvm, UartStatusAndUnclaimedPortsReadAsHardwareWould) {
    // exit code = (in 0x80) << 8 | (in 0x3fd)
    const std::vector<uint8_t> code = {
        0x66, 0xba, 0xfd, 0x03,  // mov dx, 0x3fd (LSR)
        0xec,                    // in al, dx
        0x0f, 0xb6, 0xd8,        // movzx ebx, al
        0x66, 0xba, 0x80, 0x00,  // mov dx, 0x80
        0xec,                    // in al, dx
        0x0f, 0xb6, 0xc0,        // movzx eax, al
        0xc1, 0xe0, 0x08,        // shl eax, 8
        0x09, 0xd8,              // or eax, ebx
        0x66, 0xba, 0xf4, 0x00,  // mov dx, 0xf4
        0xef,                    // out dx, eax
        0xf4,                    // hlt
    };
    Collector ev;
    VmmGuest g(tiny_guest(code), tiny_options(), ev);
    VmmOutcome o = g.run(2s);
    EXPECT_EQ(o.kind, Kind::exited) << o.detail;
    EXPECT_EQ(o.exit_code, 0xff60u);
}

TEST_F(Kvm, HostileRecordsAreProtocolErrors) {
    // Record port: an address past RAM, then one whose len is 0xffffffff; then exit 7.
    const std::vector<uint8_t> code = {
        0x66, 0xba, 0xb0, 0x0f,              // mov dx, 0xfb0
        0xb8, 0xfc, 0xff, 0xff, 0xff,        // mov eax, 0xfffffffc
        0xef,                                // out dx, eax
        0xb8, 0x00, 0x08, 0x10, 0x00,        // mov eax, 0x100800
        0xc7, 0x00, 0xff, 0xff, 0xff, 0xff,  // mov dword [rax], 0xffffffff
        0xef,                                // out dx, eax
        0x66, 0xba, 0xf4, 0x00,              // mov dx, 0xf4
        0xb8, 0x07, 0x00, 0x00, 0x00,        // mov eax, 7
        0xef,                                // out dx, eax
        0xf4,
    };
    Collector ev;
    VmmGuest g(tiny_guest(code), tiny_options(), ev);
    VmmOutcome o = g.run(2s);
    EXPECT_EQ(o.kind, Kind::exited) << o.detail;
    EXPECT_EQ(o.exit_code, 7u);
    EXPECT_TRUE(ev.records.empty());
    EXPECT_EQ(o.protocol_errors, 2u);
    EXPECT_NE(o.last_protocol_error.find("limit"), std::string::npos) << o.last_protocol_error;
}

TEST_F(Kvm, SpinningGuestIsHung) {
    Collector ev;
    VmmGuest g(tiny_guest({0xeb, 0xfe}), tiny_options(), ev);  // jmp $
    auto t0 = std::chrono::steady_clock::now();
    VmmOutcome o = g.run(1s);
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(o.kind, Kind::hung) << o.detail;
    EXPECT_NE(o.detail.find("rip=0x100000"), std::string::npos) << o.detail;
    EXPECT_GE(took, 1s);
    EXPECT_LT(took, 2s);
}

TEST_F(Kvm, TripleFaultIsShutdown) {
    const std::vector<uint8_t> code = {
        0x0f, 0x01, 0x1d, 0x09, 0x00, 0x00, 0x00,           // lidt [rip + 9]: the zero IDTR at offset 16
        0x0f, 0x0b,                                         // ud2: #UD -> #GP -> #DF -> triple fault
        0xf4, 0,    0,    0,    0,    0,    0,              // padding up to offset 16
        0,    0,    0,    0,    0,    0,    0,    0, 0, 0,  // IDTR: limit 0, base 0
    };
    Collector ev;
    VmmGuest g(tiny_guest(code), tiny_options(), ev);
    VmmOutcome o = g.run(2s);
    EXPECT_EQ(o.kind, Kind::shutdown) << o.detail;
}

TEST_F(Kvm, HltWithoutExitIsHalted) {
    Collector ev;
    VmmGuest g(tiny_guest({0xf4}), tiny_options(), ev);
    VmmOutcome o = g.run(2s);
    EXPECT_EQ(o.kind, Kind::halted) << o.detail;
}

TEST_F(Kvm, StopFromAnotherThreadOrAHandlerInterrupts) {
    {
        Collector ev;
        VmmGuest g(tiny_guest({0xeb, 0xfe}), tiny_options(), ev);
        std::thread stopper([&] {
            std::this_thread::sleep_for(100ms);
            g.stop();
        });
        VmmOutcome o = g.run(10s);
        stopper.join();
        EXPECT_EQ(o.kind, Kind::interrupted) << o.detail;
        EXPECT_LT(o.wall, 2s);
    }
    {
        // Record, then spin: stop() and kvm_stats() from inside on_record, with the vCPU stopped.
        std::vector<uint8_t> code(kHelloGuest.begin() + 10, kHelloGuest.begin() + 20);  // the record OUT
        code.insert(code.end(), {0xeb, 0xfe});
        Collector ev;
        VmmGuest g(tiny_guest(code, kRecord), tiny_options(), ev);
        VmmKvmStats stats;
        ev.on_record_hook = [&](std::string_view) {
            stats = g.kvm_stats();
            g.stop();
        };
        VmmOutcome o = g.run(10s);
        EXPECT_EQ(o.kind, Kind::interrupted) << o.detail;
        EXPECT_EQ(ev.records.size(), 1u);
        if (stats.vcpu.unavailable.empty()) {
            EXPECT_GE(stats.vcpu.values["exits"], 1u);
        }
    }
}

TEST_F(Kvm, HandlerExceptionsReachTheCaller) {
    Collector ev;
    VmmGuest g(tiny_guest(kHelloGuest, kRecord), tiny_options(), ev);
    ev.on_record_hook = [](std::string_view) { throw std::runtime_error("handler failed"); };
    EXPECT_THROW(g.run(2s), std::runtime_error);
}

TEST_F(Kvm, MigrationRepinsTheVcpuThread) {
    if (allowed_cpus().size() < 2) GTEST_SKIP() << "needs two CPUs";
    {
        Collector ev;
        VmmOptions opts = tiny_options();
        opts.migrate_every_exits = 1;
        VmmGuest g(tiny_guest(kHelloGuest, kRecord), opts, ev);
        VmmOutcome o = g.run(2s);
        EXPECT_EQ(o.kind, Kind::exited) << o.detail;
        EXPECT_GE(o.migrations, 3u);
        ASSERT_GE(o.cpus_used.size(), 2u);
        EXPECT_NE(o.cpus_used[0], o.cpus_used[1]);
    }
    {
        // By time: moves a vCPU that never leaves KVM_RUN.
        Collector ev;
        VmmOptions opts = tiny_options();
        opts.migrate_every_ms = 50ms;
        VmmGuest g(tiny_guest({0xeb, 0xfe}), opts, ev);
        VmmOutcome o = g.run(500ms);
        EXPECT_EQ(o.kind, Kind::hung) << o.detail;
        EXPECT_GE(o.migrations, 5u);
    }
    EXPECT_THROW(pin_current_thread(100000), std::runtime_error);
    EXPECT_THROW(pin_current_thread(-1), std::runtime_error);
}

// CLWB and VMMCALL never complete under QEMU on some KVMs (kvm_pvm). On flushbench's VMM the run
// must end in bounded time whatever the host does: normally, by the watchdog (kvm_pvm re-enters
// VMMCALL forever), or as a crash with KVM's reason (kvm_pvm's emulator fails on CLWB).
TEST_F(Kvm, WatchdogBoundsInstructionsThatMayNeverComplete) {
    const std::vector<std::pair<const char*, std::vector<uint8_t>>> probes = {
        {"vmmcall", {0x0f, 0x01, 0xd9}},
        {"clwb", {0xb8, 0x00, 0x08, 0x10, 0x00, 0x66, 0x0f, 0xae, 0x30}},  // mov eax, 0x100800; clwb [rax]
    };
    for (const auto& [name, insn] : probes) {
        std::vector<uint8_t> code = insn;
        code.insert(code.end(), {0x66, 0xba, 0xf4, 0x00, 0x31, 0xc0, 0xef, 0xf4});  // exit 0
        Collector ev;
        VmmGuest g(tiny_guest(code), tiny_options(), ev);
        VmmOutcome o = g.run(1s);
        EXPECT_LT(o.wall, 3s) << name;
        EXPECT_NE(o.kind, Kind::interrupted) << name << ": " << o.detail;
        if (o.kind == Kind::crashed) {
            EXPECT_NE(o.detail.find("KVM_EXIT_INTERNAL_ERROR"), std::string::npos) << o.detail;
        }
        std::printf("[ probe    ] %s: %s (%s)\n", name, to_string(o.kind), o.detail.c_str());
    }
}

// ---- The real guest kernel -------------------------------------------------------------------

TEST_F(Kvm, BootsTheFlushbenchGuest) {
    const std::string path = FLUSHBENCH_GUEST_ELF;
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not built";
    Collector ev;
    VmmOptions opts;
    opts.mem_bytes = 256ull << 20;
    opts.cmdline = "patterns=nop,cpuid reps=5 warmup=1 footprints=0";
    VmmGuest g(ElfImage::load(path), opts, ev);
    VmmOutcome o = g.run(10s);
    EXPECT_EQ(o.kind, Kind::exited) << o.detail << "\nserial: " << ev.serial;
    EXPECT_EQ(o.exit_code, uint32_t(boot::ExitCode::done)) << ev.serial;
    EXPECT_EQ(o.protocol_errors, 0u) << o.last_protocol_error;
    ASSERT_FALSE(ev.records.empty()) << "serial: " << ev.serial;
    for (const std::string& r : ev.records) EXPECT_EQ(r.rfind("FB1 ", 0), 0u) << r;
}

}  // namespace
}  // namespace fb
