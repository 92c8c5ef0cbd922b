// The rules that turn the kernel's answers into a verdict on a mode label (host/mode_evidence.h),
// the VFIO attachment's refusals (host/vfio_attachment.h), and kprobes that say why they are not
// there instead of counting zeros (host/kernel_probes.h).
#include "host/evidence/mode_evidence.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/config.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

const KernelCoherency kContainerNc{Coherency::noncoherent, "vfio-container", "VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU) = 0"};
const KernelCoherency kContainerCc{Coherency::coherent, "vfio-container", "VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU) = 1"};
const KernelCoherency kQemuOwned{Coherency::unknown, "", "QEMU opened it in its own container"};

AttachedFile nc_file(KernelCoherency k = kContainerNc) { return {"/dev/vfio/5", "noncoherent", k}; }
AttachedFile baseline(KernelCoherency k = kContainerCc) { return {"/dev/vfio/7", "baseline", k}; }

struct Case {
    const char* name;
    const char* mode;
    std::vector<AttachedFile> attached;
    std::optional<KvmObservation> kvm;
    Verdict want;
    const char* source;  // for confirmed; a substring of the summary otherwise
};

class Judge : public ::testing::TestWithParam<Case> {};

TEST_P(Judge, GivesTheVerdictTheKernelsAnswersSupport) {
    const Case& c = GetParam();
    Judgement j = judge(c.mode, c.attached, c.kvm, c.kvm ? "" : "no kprobe PMU");
    EXPECT_EQ(to_string(j.verdict), std::string(to_string(c.want))) << j.summary;
    if (c.want == Verdict::confirmed) EXPECT_EQ(j.source, c.source) << j.summary;
    else EXPECT_NE(j.summary.find(c.source), std::string::npos) << j.summary;
    EXPECT_EQ(j.summary.find('\n'), std::string::npos);
}

const Case kCases[] = {
    {"coherent_no_file", "coherent", {}, std::nullopt, Verdict::confirmed, "no-vfio-file"},
    {"coherent_no_file_kprobes", "coherent", {}, KvmObservation{false, 13, 0}, Verdict::confirmed, "no-vfio-file+kprobes"},
    {"coherent_registered_contradicts", "coherent", {}, KvmObservation{true, 0, 0}, Verdict::contradicted, "has non-coherent DMA registered"},
    {"coherent_baseline_container", "coherent", {baseline()}, std::nullopt, Verdict::confirmed, "vfio-container"},
    {"coherent_baseline_qemu_only", "coherent", {baseline(kQemuOwned)}, std::nullopt, Verdict::unverified, "no kernel answer"},
    {"coherent_baseline_nc_contradicts", "coherent", {baseline(kContainerNc)}, std::nullopt, Verdict::contradicted, "non-coherent"},
    {"nc_container_says_nc", "noncoherent", {nc_file()}, std::nullopt, Verdict::confirmed, "vfio-container"},
    {"nc_container_and_kprobes", "noncoherent", {nc_file()}, KvmObservation{true, 13, 13}, Verdict::confirmed, "vfio-container+kprobes"},
    // Linux 6.1 without a container: the file is attached, KVM registers nothing.
    {"nc_not_registered", "noncoherent", {nc_file(kQemuOwned)}, KvmObservation{false, 13, 0}, Verdict::contradicted,
     "did not register non-coherent DMA"},
    {"nc_exits_without_flushes", "noncoherent", {nc_file()}, KvmObservation{true, 13, 0}, Verdict::contradicted,
     "13 WBINVD exits without flushing"},
    {"nc_container_says_coherent", "noncoherent", {nc_file(kContainerCc)}, std::nullopt, Verdict::contradicted, "(coherent)"},
    {"nc_no_answer", "noncoherent", {nc_file(kQemuOwned)}, std::nullopt, Verdict::unverified, "no kprobe PMU"},
    {"nc_without_file", "noncoherent", {}, std::nullopt, Verdict::contradicted, "no non-coherent VFIO file"},
    // A coherent baseline beside the non-coherent file neither helps nor hurts the claim.
    {"nc_with_baseline", "noncoherent", {baseline(), nc_file()}, KvmObservation{true, 4, 8}, Verdict::confirmed, "vfio-container+kprobes"},
};

INSTANTIATE_TEST_SUITE_P(Rules, Judge, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

TEST(ModeWitness, WithoutKprobesJudgesEachPhaseAndEveryCellCarriesItsVerdict) {
    CoherencyProbes none = CoherencyProbes::open(true);
    if (none.available()) GTEST_SKIP() << "kprobes work here: this test is about hosts without them";
    ModeWitness w(std::move(none), 2, 1);
    const PhaseEvidence& a = w.begin(0, "coherent", "coherent", [] { return std::vector<AttachedFile>{}; });
    EXPECT_EQ(a.judgement.verdict, Verdict::confirmed);
    w.cell_begin();
    nlohmann::json cell = w.cell_end();
    EXPECT_EQ(cell.value("verdict", ""), "confirmed");
    EXPECT_EQ(cell.value("run", 0u), 2u);
    EXPECT_EQ(cell.value("boot", 0u), 1u);
    EXPECT_NE(cell.value("kprobes", "").find("unavailable"), std::string::npos) << cell.dump();
    EXPECT_FALSE(cell.contains("wbinvd_flushes")) << "no count where nothing was counted";

    const PhaseEvidence& b = w.begin(1, "noncoherent", "noncoherent", [] { return std::vector<AttachedFile>{nc_file(kQemuOwned)}; });
    EXPECT_EQ(b.judgement.verdict, Verdict::unverified);
    w.end();
    ASSERT_EQ(w.phases().size(), 2u);
    nlohmann::json j = to_json(w.phases()[1]);
    EXPECT_EQ(j.value("verdict", ""), "unverified");
    EXPECT_TRUE(j["kprobes"].contains("unavailable"));
    EXPECT_LE(j["window_ns"][0].get<int64_t>(), j["window_ns"][1].get<int64_t>());
    EXPECT_NE(contradiction_message(w.phases()[1]).find("Fix:"), std::string::npos);
}

TEST(KernelProbes, SayWhyTheyAreUnavailableInsteadOfCountingZeros) {
    CoherencyProbes p = CoherencyProbes::open(false);
    if (p.available()) {
        EXPECT_TRUE(p.describe().contains("functions"));
        return;
    }
    EXPECT_FALSE(p.unavailable().empty());
    EXPECT_TRUE(p.describe().contains("unavailable"));
    CoherencyCounts c = p.read();
    EXPECT_EQ(c.flushes(), 0u);
    EXPECT_FALSE(c.noncoherent_registered());
}

TEST(CoherencyCounts, DifferenceKeepsOnlyCpusThatFlushed) {
    CoherencyCounts before, after;
    before.registered = 1, before.wbinvd_exits = 3, before.flushes_per_cpu = {{0, 3}, {1, 0}};
    after.registered = 1, after.unregistered = 1, after.wbinvd_exits = 7, after.flushes_per_cpu = {{0, 7}, {1, 4}};
    CoherencyCounts d = after - before;
    EXPECT_EQ(d.wbinvd_exits, 4u);
    EXPECT_EQ(d.flushes(), 8u);
    EXPECT_EQ(d.unregistered, 1u);
    EXPECT_FALSE(after.noncoherent_registered());
    nlohmann::json j = to_json(d);
    EXPECT_EQ(j["wbinvd_flushes_per_cpu"]["1"], 4);
}

VfioFileInfo fake_group(std::vector<std::pair<std::string, std::string>> devices) {
    VfioFileInfo f;
    f.path = "/dev/vfio/9";
    f.kind = VfioFileKind::group;
    for (auto& [name, driver] : devices) {
        VfioDevice d;
        d.name = name, d.driver = driver, d.bus = "pci";
        f.devices.push_back(d);
    }
    return f;
}

TEST(VfioAttachment, DevicesOnHostDriversBlockTheGroup) {
    auto blocking = devices_blocking_vfio(
        fake_group({{"0000:00:04.0", "vfio-pci"}, {"0000:00:04.1", "e1000"}, {"0000:00:04.2", ""}, {"0000:00:1c.0", "pcieport"},
                    {"0000:00:04.3", "pci-stub"}}));
    ASSERT_EQ(blocking.size(), 1u);
    EXPECT_EQ(describe_blocking(blocking), "0000:00:04.1 (bound to e1000)");
    std::string fix = bind_to_vfio_pci_fix("0000:00:04.1");
    EXPECT_NE(fix.find("driver_override"), std::string::npos);
    EXPECT_NE(fix.find("drivers_probe"), std::string::npos);
}

TEST(VfioAttachment, NotAVfioFileIsAUsageError) {
    VfioFileInfo f;
    f.path = "/dev/null";
    try {
        VfioAttachment::open(f);
        FAIL() << "opened /dev/null as a VFIO file";
    } catch (const VfioAttachError& e) {
        EXPECT_EQ(e.kind(), VfioAttachError::Kind::usage);
        EXPECT_NE(std::string(e.what()).find("/dev/vfio/N"), std::string::npos);
    }
}

// A file named like a group that is not one: the kernel's own refusal becomes one line.
TEST(VfioAttachment, AGroupTheKernelDoesNotKnowIsAnEnvironmentError) {
    fs::path dir = fs::temp_directory_path() / ("fb-vfio-" + std::to_string(getpid())) / "vfio";
    fs::create_directories(dir);
    std::ofstream(dir / "9") << "";
    VfioFileInfo f = fake_group({{"0000:00:04.0", "vfio-pci"}});
    f.path = (dir / "9").string();
    try {
        VfioAttachment::open(f, dir.parent_path().string());
        FAIL() << "a regular file passed as a VFIO group";
    } catch (const VfioAttachError& e) {
        EXPECT_EQ(e.kind(), VfioAttachError::Kind::environment);
        EXPECT_NE(std::string(e.what()).find("VFIO_GROUP_GET_STATUS"), std::string::npos) << e.what();
    }
    fs::remove_all(dir.parent_path());
}

TEST(VfioAttachment, AMissingGroupNamesTheFix) {
    VfioFileInfo f = fake_group({});
    f.path = "/nonexistent/vfio/9";
    try {
        VfioAttachment::open(f);
        FAIL();
    } catch (const VfioAttachError& e) {
        EXPECT_NE(std::string(e.what()).find("vfio-pci"), std::string::npos) << e.what();
    }
}

TEST(Config, MaskWidthIsACheckedCount) {
    Config c;
    EXPECT_EQ(parse_config("mask_width=4", c).message, nullptr);
    EXPECT_EQ(c.mask_width, 4u);
    EXPECT_NE(parse_config("mask_width=0", c).message, nullptr);
    EXPECT_NE(parse_config("mask_width=65", c).message, nullptr);
    EXPECT_EQ(parse_config("", c).message, nullptr);
    EXPECT_EQ(c.mask_width, 1u);
}

}  // namespace
}  // namespace fb
