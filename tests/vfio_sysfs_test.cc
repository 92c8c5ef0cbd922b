// describe_vfio_file() against fake sysfs trees shaped like the real one: relative symlinks from
// iommu_groups into /sys/devices, each device's iommu link to its unit, intel-iommu/ecap as hex text.
#include "host/sys/sysfs.h"
#include "host/vfio/vfio_sysfs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace fb {
namespace {

class FakeSysfs : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/fb_vfio_sysfs_XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        base_ = tmpl;
        sys_ = base_ / "sys";
        fs::create_directories(sys_);

        // IOMMU units: one VT-d with snoop control, one without, one malformed, one AMD-Vi.
        unit("devices/virtual/iommu/dmar0", "class/iommu/dmar0");
        write("devices/virtual/iommu/dmar0/intel-iommu/ecap", "f050da\n");  // 0xda: bit 7 set
        unit("devices/virtual/iommu/dmar1", "class/iommu/dmar1");
        write("devices/virtual/iommu/dmar1/intel-iommu/ecap", "f0505a\n");  // 0x5a: bit 7 clear
        unit("devices/virtual/iommu/dmar2", "class/iommu/dmar2");
        write("devices/virtual/iommu/dmar2/intel-iommu/ecap", "not-hex\n");
        unit("devices/pci0000:00/0000:00:00.2/iommu/ivhd0", "class/iommu/ivhd0");
        write("devices/pci0000:00/0000:00:00.2/iommu/ivhd0/amd-iommu/features", "58f77ef22294ade\n");

        pci_device(7, "0000:01:00.0", "devices/virtual/iommu/dmar0");
        pci_device(8, "0000:02:00.0", "devices/virtual/iommu/dmar1");
        pci_device(9, "0000:03:00.0", "devices/pci0000:00/0000:00:00.2/iommu/ivhd0");
        pci_device(11, "0000:04:00.0", "devices/virtual/iommu/dmar2");
        // A group whose two functions sit behind different units: one lacking SC decides.
        pci_device(12, "0000:05:00.0", "devices/virtual/iommu/dmar0");
        pci_device(12, "0000:05:00.1", "devices/virtual/iommu/dmar1");

        // mtty parent with two types and one mdev in group 10 (vfio names emulated groups vfio-noiommu).
        const std::string mtty = "devices/virtual/mtty/mtty";
        link("class/mdev_bus/mtty", mtty);
        write(mtty + "/mdev_supported_types/mtty-1/name", "Single port serial\n");
        write(mtty + "/mdev_supported_types/mtty-1/available_instances", "24\n");
        write(mtty + "/mdev_supported_types/mtty-2/name", "Dual-port-serial\n");
        write(mtty + "/mdev_supported_types/mtty-2/available_instances", "junk\n");
        const std::string mdev = mtty + "/" + kUuid;
        link(mdev + "/mdev_type", mtty + "/mdev_supported_types/mtty-2");
        link(mdev + "/iommu_group", "kernel/iommu_groups/10");
        link(mdev + "/subsystem", "bus/mdev");
        link(mdev + "/driver", "bus/mdev/drivers/mtty");
        link("kernel/iommu_groups/10/devices/" + std::string(kUuid), mdev);
        write("kernel/iommu_groups/10/name", "vfio-noiommu\n");

        // No-IOMMU mode: a device without an iommu link in a fake group.
        const std::string nodev = "devices/pci0000:00/0000:00:06.0/0000:06:00.0";
        fs::create_directories(sys_ / nodev);
        link(nodev + "/iommu_group", "kernel/iommu_groups/3");
        link("kernel/iommu_groups/3/devices/0000:06:00.0", nodev);
        write("kernel/iommu_groups/3/name", "vfio-noiommu\n");

        // Device cdev vfio0 for 0000:01:00.0 (coherent) and vfio1 for the mdev.
        const std::string pci7 = "devices/pci0000:00/0000:00:01.0/0000:01:00.0";
        fs::create_directories(sys_ / pci7 / "vfio-dev/vfio0");
        link(pci7 + "/vfio-dev/vfio0/device", pci7);
        link("class/vfio-dev/vfio0", pci7 + "/vfio-dev/vfio0");
        fs::create_directories(sys_ / mdev / "vfio-dev/vfio1");
        link(mdev + "/vfio-dev/vfio1/device", mdev);
        link("class/vfio-dev/vfio1", mdev + "/vfio-dev/vfio1");

        // An empty group.
        fs::create_directories(sys_ / "kernel/iommu_groups/13/devices");
    }

    void TearDown() override {
        std::error_code ec;
        fs::remove_all(base_, ec);
    }

    // A relative link, as sysfs makes them, so the tree resolves wherever it lives.
    void link(const std::string& at, const std::string& target) {
        fs::path a = sys_ / at;
        fs::create_directories(a.parent_path());
        fs::create_directory_symlink((sys_ / target).lexically_relative(a.parent_path()), a);
    }
    void write(const std::string& at, const std::string& text) {
        fs::path a = sys_ / at;
        fs::create_directories(a.parent_path());
        std::ofstream(a) << text;
    }
    void unit(const std::string& dir, const std::string& class_link) {
        fs::create_directories(sys_ / dir);
        link(class_link, dir);
    }
    void pci_device(int group, const std::string& bdf, const std::string& unit_dir) {
        std::string dir = "devices/pci0000:00/0000:00:01.0/" + bdf;
        fs::create_directories(sys_ / dir);
        link(dir + "/iommu", unit_dir);
        link(dir + "/iommu_group", "kernel/iommu_groups/" + std::to_string(group));
        link(dir + "/subsystem", "bus/pci");
        link(dir + "/driver", "bus/pci/drivers/vfio-pci");
        link("kernel/iommu_groups/" + std::to_string(group) + "/devices/" + bdf, dir);
    }

    VfioFileInfo describe(const std::string& dev_path) { return describe_vfio_file(dev_path, sys_.string()); }

    static constexpr const char* kUuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    fs::path base_, sys_;
};

TEST_F(FakeSysfs, GroupBehindVtdWithSnoopControlIsCoherent) {
    auto f = describe("/dev/vfio/7");
    EXPECT_EQ(f.kind, VfioFileKind::group);
    ASSERT_TRUE(f.iommu_group);
    EXPECT_EQ(*f.iommu_group, 7u);
    ASSERT_EQ(f.devices.size(), 1u);
    const auto& d = f.devices[0];
    EXPECT_EQ(d.name, "0000:01:00.0");
    EXPECT_EQ(d.bus, "pci");
    EXPECT_EQ(d.driver, "vfio-pci");
    EXPECT_EQ(d.iommu.name, "dmar0");
    EXPECT_EQ(d.iommu.type, IommuType::intel_vtd);
    ASSERT_TRUE(d.iommu.ecap);
    EXPECT_EQ(*d.iommu.ecap, 0xf050dau);
    EXPECT_TRUE(d.iommu.snoop_control);
    EXPECT_EQ(f.verdict, Coherency::coherent);
    EXPECT_NE(f.explanation.find("dmar0"), std::string::npos) << f.explanation;
    EXPECT_NE(f.explanation.find("snoop control"), std::string::npos) << f.explanation;
    // The way to the other mode: an mdev such as mtty.
    EXPECT_NE(f.fix.find("mtty"), std::string::npos) << f.fix;
    EXPECT_NE(f.fix.find("/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create"), std::string::npos);
}

TEST_F(FakeSysfs, GroupBehindVtdWithoutSnoopControlIsNoncoherent) {
    auto f = describe("/dev/vfio/8");
    ASSERT_EQ(f.devices.size(), 1u);
    EXPECT_EQ(f.devices[0].iommu.name, "dmar1");
    EXPECT_FALSE(f.devices[0].iommu.snoop_control);
    EXPECT_EQ(f.devices[0].iommu.coherency, Coherency::noncoherent);
    EXPECT_EQ(f.verdict, Coherency::noncoherent);
    EXPECT_NE(f.explanation.find("WBINVD"), std::string::npos) << f.explanation;
    EXPECT_NE(f.fix.find("vfio-pci"), std::string::npos) << f.fix;
}

TEST_F(FakeSysfs, GroupBehindAmdViIsCoherent) {
    auto f = describe("/dev/vfio/9");
    ASSERT_EQ(f.devices.size(), 1u);
    EXPECT_EQ(f.devices[0].iommu.type, IommuType::amd_vi);
    EXPECT_EQ(f.devices[0].iommu.name, "ivhd0");
    EXPECT_FALSE(f.devices[0].iommu.ecap);
    EXPECT_EQ(f.verdict, Coherency::coherent);
    EXPECT_FALSE(f.explanation.empty());
}

TEST_F(FakeSysfs, MdevGroupIsNoncoherent) {
    auto f = describe("/dev/vfio/10");
    EXPECT_EQ(f.kind, VfioFileKind::group);
    ASSERT_EQ(f.devices.size(), 1u);
    const auto& d = f.devices[0];
    EXPECT_EQ(d.name, kUuid);
    EXPECT_EQ(d.iommu.type, IommuType::none_mdev);
    EXPECT_EQ(d.mdev_parent, "mtty");
    EXPECT_EQ(d.mdev_type, "mtty-2");
    EXPECT_EQ(d.driver, "mtty");
    EXPECT_TRUE(d.iommu.name.empty());
    EXPECT_EQ(f.verdict, Coherency::noncoherent);
    EXPECT_NE(f.explanation.find("mdev"), std::string::npos) << f.explanation;
    EXPECT_FALSE(f.fix.empty());
}

TEST_F(FakeSysfs, NoiommuGroupIsNoncoherent) {
    auto f = describe("/dev/vfio/noiommu-3");
    EXPECT_EQ(f.kind, VfioFileKind::noiommu_group);
    ASSERT_TRUE(f.iommu_group);
    EXPECT_EQ(*f.iommu_group, 3u);
    ASSERT_EQ(f.devices.size(), 1u);
    EXPECT_EQ(f.devices[0].iommu.type, IommuType::none_noiommu);
    EXPECT_EQ(f.verdict, Coherency::noncoherent);
    EXPECT_NE(f.explanation.find("no IOMMU"), std::string::npos) << f.explanation;
}

TEST_F(FakeSysfs, OneDeviceWithoutSnoopControlMakesTheGroupNoncoherent) {
    auto f = describe("/dev/vfio/12");
    ASSERT_EQ(f.devices.size(), 2u);
    EXPECT_EQ(f.devices[0].iommu.coherency, Coherency::coherent);
    EXPECT_EQ(f.devices[1].iommu.coherency, Coherency::noncoherent);
    EXPECT_EQ(f.verdict, Coherency::noncoherent);
    EXPECT_NE(f.explanation.find("0000:05:00.1"), std::string::npos) << f.explanation;
}

TEST_F(FakeSysfs, MalformedEcapIsUnknownWithReason) {
    auto f = describe("/dev/vfio/11");
    ASSERT_EQ(f.devices.size(), 1u);
    EXPECT_EQ(f.devices[0].iommu.type, IommuType::intel_vtd);
    EXPECT_FALSE(f.devices[0].iommu.ecap);
    EXPECT_EQ(f.verdict, Coherency::unknown);
    EXPECT_NE(f.explanation.find("not-hex"), std::string::npos) << f.explanation;
    EXPECT_NE(f.explanation.find("not a hex number"), std::string::npos) << f.explanation;
    EXPECT_FALSE(f.fix.empty());
}

TEST_F(FakeSysfs, EmptyOrMissingEcapIsUnknown) {
    write("devices/virtual/iommu/dmar1/intel-iommu/ecap", "\n");
    EXPECT_EQ(describe("/dev/vfio/8").verdict, Coherency::unknown);
    fs::remove(sys_ / "devices/virtual/iommu/dmar1/intel-iommu/ecap");
    auto f = describe("/dev/vfio/8");
    EXPECT_EQ(f.verdict, Coherency::unknown);
    EXPECT_NE(f.explanation.find("cannot read"), std::string::npos) << f.explanation;
}

TEST_F(FakeSysfs, DeviceCdevResolvesThroughVfioDevClass) {
    auto f = describe("/dev/vfio/devices/vfio0");
    EXPECT_EQ(f.kind, VfioFileKind::device_cdev);
    EXPECT_EQ(f.cdev, "vfio0");
    ASSERT_TRUE(f.iommu_group);
    EXPECT_EQ(*f.iommu_group, 7u);
    ASSERT_EQ(f.devices.size(), 1u);
    EXPECT_EQ(f.devices[0].name, "0000:01:00.0");
    EXPECT_EQ(f.verdict, Coherency::coherent);

    auto m = describe("/dev/vfio/devices/vfio1");
    ASSERT_EQ(m.devices.size(), 1u);
    EXPECT_EQ(m.devices[0].iommu.type, IommuType::none_mdev);
    EXPECT_EQ(m.verdict, Coherency::noncoherent);
}

TEST_F(FakeSysfs, MissingGroupOrCdevIsUnknown) {
    auto g = describe("/dev/vfio/42");
    EXPECT_EQ(g.kind, VfioFileKind::group);
    EXPECT_EQ(g.verdict, Coherency::unknown);
    EXPECT_NE(g.explanation.find("42"), std::string::npos);
    EXPECT_FALSE(g.fix.empty());

    auto e = describe("/dev/vfio/13");
    EXPECT_EQ(e.verdict, Coherency::unknown);
    EXPECT_NE(e.explanation.find("no devices"), std::string::npos) << e.explanation;

    auto c = describe("/dev/vfio/devices/vfio9");
    EXPECT_EQ(c.kind, VfioFileKind::device_cdev);
    EXPECT_EQ(c.verdict, Coherency::unknown);
    EXPECT_FALSE(c.explanation.empty());
}

TEST_F(FakeSysfs, NonVfioPathsAreNotVfio) {
    for (const char* p : {"/dev/null", "/dev/kvm", "/dev/vfio/vfio", "/dev/vfio/abc", "/tmp/7", "/dev/vfio/devices/foo",
                          "/dev/vfio/99999999999999999999", ""}) {
        auto f = describe(p);
        EXPECT_EQ(f.kind, VfioFileKind::not_vfio) << p;
        EXPECT_EQ(f.verdict, Coherency::unknown) << p;
        EXPECT_FALSE(f.explanation.empty()) << p;
        EXPECT_FALSE(f.fix.empty()) << p;
        EXPECT_TRUE(f.devices.empty()) << p;
    }
    EXPECT_NE(describe("/dev/vfio/vfio").explanation.find("container"), std::string::npos);
}

TEST_F(FakeSysfs, ExistingNonCharacterFileIsNotVfio) {
    fs::create_directories(base_ / "dev/vfio");
    std::ofstream(base_ / "dev/vfio/7") << "x";
    auto f = describe((base_ / "dev/vfio/7").string());
    EXPECT_EQ(f.kind, VfioFileKind::not_vfio);
    EXPECT_NE(f.explanation.find("not a character device"), std::string::npos) << f.explanation;
}

TEST(VfioSysfsRealMachine, CharDeviceIsJudgedByItsDeviceNumber) {
    // /dev/null is char 1:3; the real /sys/dev/char names it mem/null, whatever the node is called.
    if (!fs::exists("/sys/dev/char/1:3")) GTEST_SKIP() << "no /sys/dev/char/1:3";
    auto f = describe_vfio_file("/dev/null");
    EXPECT_EQ(f.kind, VfioFileKind::not_vfio);
    EXPECT_NE(f.explanation.find("null"), std::string::npos) << f.explanation;
}

TEST_F(FakeSysfs, ListsIommuAndDmarUnits) {
    write("devices/virtual/iommu/virtio0/.keep", "");
    link("class/iommu/virtio0", "devices/virtual/iommu/virtio0");
    auto all = list_iommu_units(sys_.string());
    ASSERT_EQ(all.size(), 5u);
    EXPECT_EQ(all[3].name, "ivhd0");
    EXPECT_EQ(all[3].type, IommuType::amd_vi);
    EXPECT_EQ(all[4].type, IommuType::virtio_iommu);
    EXPECT_EQ(all[4].coherency, Coherency::noncoherent);

    auto dmar = list_dmar_units(sys_.string());
    ASSERT_EQ(dmar.size(), 3u);
    EXPECT_EQ(dmar[0].name, "dmar0");
    EXPECT_TRUE(dmar[0].snoop_control);
    EXPECT_EQ(dmar[0].coherency, Coherency::coherent);
    EXPECT_EQ(dmar[1].name, "dmar1");
    EXPECT_FALSE(dmar[1].snoop_control);
    EXPECT_EQ(dmar[1].coherency, Coherency::noncoherent);
    EXPECT_EQ(dmar[2].name, "dmar2");
    EXPECT_FALSE(dmar[2].ecap);
    EXPECT_EQ(dmar[2].coherency, Coherency::unknown);
    EXPECT_FALSE(dmar[2].reason.empty());
}

TEST_F(FakeSysfs, UnrecognisedIommuUnitIsUnknown) {
    fs::create_directories(sys_ / "devices/virtual/iommu/smmu3.0x0");
    link("class/iommu/smmu3.0x0", "devices/virtual/iommu/smmu3.0x0");
    auto units = list_iommu_units(sys_.string());
    auto it = std::find_if(units.begin(), units.end(), [](const IommuUnit& u) { return u.name == "smmu3.0x0"; });
    ASSERT_NE(it, units.end());
    EXPECT_EQ(it->type, IommuType::unknown);
    EXPECT_EQ(it->coherency, Coherency::unknown);
    EXPECT_FALSE(it->reason.empty());
}

TEST_F(FakeSysfs, ListsMdevTypes) {
    auto types = list_mdev_types(sys_.string());
    ASSERT_EQ(types.size(), 2u);
    EXPECT_EQ(types[0].parent, "mtty");
    EXPECT_EQ(types[0].type_id, "mtty-1");
    EXPECT_EQ(types[0].name, "Single port serial");
    ASSERT_TRUE(types[0].available_instances);
    EXPECT_EQ(*types[0].available_instances, 24u);
    EXPECT_EQ(types[1].type_id, "mtty-2");
    EXPECT_FALSE(types[1].available_instances);  // "junk"
    EXPECT_EQ(fs::path(types[1].create_path).filename(), "create");
}

TEST_F(FakeSysfs, NothingThereMeansEmptyLists) {
    auto empty = (base_ / "nothing").string();
    EXPECT_TRUE(list_iommu_units(empty).empty());
    EXPECT_TRUE(list_dmar_units(empty).empty());
    EXPECT_TRUE(list_mdev_types(empty).empty());
    EXPECT_TRUE(list_vfio_files(empty).empty());
}

TEST_F(FakeSysfs, ListsVfioFilesNaturallySortedWithoutTheContainer) {
    fs::path dev = base_ / "dev";
    fs::create_directories(dev / "vfio/devices");
    for (const char* n : {"vfio/10", "vfio/7", "vfio/vfio", "vfio/noiommu-3", "vfio/devices/vfio10", "vfio/devices/vfio2"})
        std::ofstream(dev / n) << "";
    auto files = list_vfio_files(dev.string());
    std::vector<std::string> want = {(dev / "vfio/7").string(), (dev / "vfio/10").string(),
                                     (dev / "vfio/noiommu-3").string(), (dev / "vfio/devices/vfio2").string(),
                                     (dev / "vfio/devices/vfio10").string()};
    EXPECT_EQ(files, want);
}

TEST_F(FakeSysfs, JsonCarriesVerdictAndDevices) {
    nlohmann::json j = describe("/dev/vfio/8");
    EXPECT_EQ(j["kind"], "group");
    EXPECT_EQ(j["iommu_group"], 8);
    EXPECT_EQ(j["verdict"], "noncoherent");
    ASSERT_EQ(j["devices"].size(), 1u);
    EXPECT_EQ(j["devices"][0]["iommu"]["type"], "intel_vtd");
    EXPECT_EQ(j["devices"][0]["iommu"]["ecap"], "0xf0505a");
    EXPECT_EQ(j["devices"][0]["iommu"]["snoop_control"], false);
    EXPECT_FALSE(j["explanation"].get<std::string>().empty());
    nlohmann::json n = describe("/dev/null");
    EXPECT_TRUE(n["iommu_group"].is_null());
}

TEST(SysfsText, ParsesHexAndDecimalDefensively) {
    EXPECT_EQ(parse_hex_u64("f050da\n"), 0xf050dau);
    EXPECT_EQ(parse_hex_u64("0xFF"), 0xffu);
    EXPECT_EQ(parse_hex_u64("  5a  "), 0x5au);
    EXPECT_EQ(parse_hex_u64("ffffffffffffffff"), UINT64_MAX);
    EXPECT_FALSE(parse_hex_u64(""));
    EXPECT_FALSE(parse_hex_u64("\n"));
    EXPECT_FALSE(parse_hex_u64("0x"));
    EXPECT_FALSE(parse_hex_u64("zz"));
    EXPECT_FALSE(parse_hex_u64("-1"));
    EXPECT_FALSE(parse_hex_u64("1ffffffffffffffff"));  // 65 bits
    EXPECT_FALSE(parse_hex_u64("12 34"));
    EXPECT_EQ(parse_dec_u64("24\n"), 24u);
    EXPECT_FALSE(parse_dec_u64("0x10"));
    EXPECT_FALSE(parse_dec_u64("+1"));
    EXPECT_FALSE(parse_dec_u64("99999999999999999999"));
}

}  // namespace
}  // namespace fb
