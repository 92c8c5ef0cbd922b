// Boots the real guest kernel under QEMU through each way in, and checks that every pattern
// produced valid records or a well-formed "cannot run here". Needs qemu-system-x86_64 (and
// /dev/kvm for the KVM variants); skips with the reason otherwise.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "common/boot.h"
#include "common/patterns.h"
#include "host/qemu/qemu_guest.h"
#include "host/results/record_stream.h"

namespace fb {
namespace {

using namespace std::chrono_literals;

bool kvm_usable(std::string& why) {
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        why = std::string("/dev/kvm: ") + strerror(errno);
        return false;
    }
    close(fd);
    return true;
}

struct Boot {
    QemuOutcome outcome;
    std::vector<Cell> cells;
    RecordStream stream;
};

void boot(Boot& b, const std::string& machine, bool kvm, const std::string& cmdline, std::chrono::milliseconds silence = 20s) {
    QemuOptions o;
    o.image = FLUSHBENCH_GUEST_ELF;
    o.machine = machine;
    o.kvm = kvm;
    o.mem_mib = 256;
    o.cmdline = cmdline;
    b.stream.on_cell([&](Cell&& c) { b.cells.push_back(std::move(c)); });
    QemuGuest q(o);
    b.outcome = q.run([&](std::string_view bytes) { b.stream.feed_bytes(bytes); },
                      [&](std::chrono::milliseconds silent) { return silent > silence; });
}

constexpr const char* kFootprints = "0,4K,64K";

// Every requested (pattern, footprint) is accounted for, each a result or a reasoned refusal.
void expect_every_cell_accounted(const Boot& b, const std::set<std::string>& skipped_patterns) {
    ASSERT_EQ(b.outcome.kind, QemuOutcome::Kind::exited) << b.outcome.detail << "\n" << b.stream.tail();
    EXPECT_EQ(b.outcome.guest_exit_code, int(boot::ExitCode::done)) << b.stream.tail();
    EXPECT_TRUE(b.stream.finished()) << "no summary record";
    EXPECT_EQ(b.stream.health().corrupt_lines, 0u);
    EXPECT_EQ(b.stream.health().protocol_errors, 0u);
    ASSERT_FALSE(b.stream.hello().empty());
    size_t expected = 0;
    for (const auto& p : kPatterns)
        if (p.group == Group::flush) expected += p.uses_footprint ? 3 : 1;  // "all" is the flush group
    ASSERT_EQ(b.cells.size(), expected);
    for (const auto& c : b.cells) {
        SCOPED_TRACE(c.pattern + "/" + std::to_string(c.footprint_bytes));
        if (skipped_patterns.count(c.pattern)) {
            EXPECT_EQ(c.status, CellStatus::skipped);
            EXPECT_FALSE(c.reason.empty());
            continue;
        }
        ASSERT_TRUE(c.status == CellStatus::ok || c.status == CellStatus::unsupported) << to_string(c.status) << " " << c.reason;
        if (c.status == CellStatus::ok) {
            EXPECT_EQ(c.tsc.size(), 5u);
            EXPECT_EQ(c.warmup, 1u);
        } else {
            EXPECT_FALSE(c.reason.empty());
        }
    }
}

void require_qemu() {
    if (QemuGuest::which("qemu-system-x86_64").empty()) GTEST_SKIP() << "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)";
}

TEST(GuestBoot, MultibootOnPcUnderTcg) {
    require_qemu();
    Boot b;
    boot(b, "pc", false, std::string("patterns=all footprints=") + kFootprints + " reps=5 warmup=1");
    expect_every_cell_accounted(b, {});
    EXPECT_EQ(b.stream.hello().at("entry"), "multiboot");
}

TEST(GuestBoot, PvhOnMicrovmUnderTcg) {
    require_qemu();
    Boot b;
    boot(b, "microvm", false, std::string("patterns=all footprints=") + kFootprints + " reps=5 warmup=1");
    expect_every_cell_accounted(b, {});
    EXPECT_EQ(b.stream.hello().at("entry"), "pvh");
    // TCG has no RDPMC: the guest must say so rather than report zeros.
    EXPECT_EQ(b.stream.hello().at("pmu"), "unavailable");
    EXPECT_FALSE(b.stream.hello().at("pmu_reason").empty());
}

// This machine's KVM never completes a guest CLWB. Find out here (a dedicated boot under a short
// watchdog), then run everything else with clwb excluded and the reason recorded.
TEST(GuestBoot, PvhOnMicrovmUnderKvm) {
    require_qemu();
    std::string why;
    if (!kvm_usable(why)) GTEST_SKIP() << why;
    Boot probe;
    boot(probe, "microvm", true, "patterns=clwb footprints=4K reps=5 warmup=1", 5s);
    std::set<std::string> skip;
    std::string skip_arg;
    if (probe.outcome.kind == QemuOutcome::Kind::hung) {
        ASSERT_TRUE(probe.stream.open_cell().has_value()) << "the hung cell must be identifiable";
        EXPECT_EQ(probe.stream.open_cell()->pattern, "clwb");
        skip = {"clwb"};
        skip_arg = " skip=clwb:hangs-on-this-kvm";
        ::testing::Test::RecordProperty("clwb", "hangs on this KVM; excluded");
        std::printf("note: CLWB hangs under this KVM; excluded from the full boot\n");
    }
    Boot b;
    boot(b, "microvm", true, std::string("patterns=all footprints=") + kFootprints + " reps=5 warmup=1" + skip_arg);
    expect_every_cell_accounted(b, skip);
    EXPECT_EQ(b.stream.hello().at("entry"), "pvh");
}

TEST(GuestBoot, MultibootOnPcUnderKvm) {
    require_qemu();
    std::string why;
    if (!kvm_usable(why)) GTEST_SKIP() << why;
    Boot b;
    boot(b, "pc", true, "patterns=nop,cpuid,wbinvd footprints=0 reps=5 warmup=1");
    ASSERT_EQ(b.outcome.kind, QemuOutcome::Kind::exited) << b.outcome.detail;
    EXPECT_EQ(b.cells.size(), 3u);
    for (const auto& c : b.cells) EXPECT_EQ(c.status, CellStatus::ok) << c.pattern;
}

// The memory-type patterns map their buffer WC or UC through the guest PAT and say how the page
// table reads back; the MTRRs are on, whoever enabled them.
TEST(GuestBoot, MemoryTypePatternsReportTheirMapping) {
    require_qemu();
    Boot b;
    boot(b, "microvm", false, "patterns=memtypes footprints=4K reps=3 warmup=0");
    ASSERT_EQ(b.outcome.kind, QemuOutcome::Kind::exited) << b.outcome.detail;
    size_t memtype_patterns = 0;
    for (const auto& p : kPatterns) memtype_patterns += p.group == Group::memtype;
    ASSERT_EQ(b.cells.size(), memtype_patterns);
    for (const auto& c : b.cells) {
        EXPECT_EQ(c.status, CellStatus::ok) << c.pattern << " " << c.reason;
        ASSERT_TRUE(c.mapping.has_value()) << c.pattern;
        const Pattern* p = find_pattern(c.pattern.c_str());
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(c.mapping->asked, mem_type_name(p->memtype)) << c.pattern;
        // Every memory-type cell reads its mapping back, write-back ones too.
        EXPECT_EQ(c.mapping->mapped, c.mapping->asked) << c.pattern << ": the page table reads back another type";
        EXPECT_EQ(c.mapping->pat, 0x0407050600070106u) << c.pattern << ": PA0..PA7 WB, WC, UC-, UC, WB, WP, UC-, WT";
    }
    EXPECT_TRUE(b.stream.hello().count("mtrr_def_type"));
    EXPECT_EQ(b.stream.hello().at("pat"), "0x407050600070106");
}

TEST(GuestBoot, BadConfigurationExitsWithTheBadConfigCode) {
    require_qemu();
    Boot b;
    boot(b, "microvm", false, "patterns=nosuch");
    ASSERT_EQ(b.outcome.kind, QemuOutcome::Kind::exited);
    EXPECT_EQ(b.outcome.guest_exit_code, int(boot::ExitCode::bad_config));
    ASSERT_TRUE(b.stream.guest_error().has_value());
    EXPECT_NE(b.stream.guest_error()->find("nosuch"), std::string::npos);
}

TEST(GuestBoot, FootprintLargerThanGuestRamIsUnsupportedNotFatal) {
    require_qemu();
    Boot b;
    boot(b, "microvm", false, "patterns=dirty footprints=4K,1G reps=2 warmup=0");
    ASSERT_EQ(b.outcome.kind, QemuOutcome::Kind::exited);
    ASSERT_EQ(b.cells.size(), 2u);
    EXPECT_EQ(b.cells[0].status, CellStatus::ok);
    EXPECT_EQ(b.cells[1].status, CellStatus::unsupported);
    EXPECT_EQ(b.cells[1].reason, "footprint-exceeds-guest-ram");
}

}  // namespace
}  // namespace fb
