// The record codec (common/wire.h) and the host's decoder (host/record_stream.h): what the guest
// writes, the host reads back, and whatever else arrives is caught, counted and never trusted.
#include "common/wire.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "host/results/record_stream.h"

namespace fb {
namespace {

std::string sv(Str s) { return {s.p, s.n}; }

std::string rec(wire::Writer& w) { return sv(w.finish()); }

TEST(Wire, Crc32MatchesTheIeeeCheckValue) { EXPECT_EQ(wire::crc32("123456789"), 0xCBF43926u); }

TEST(Wire, RoundTrip) {
    uint64_t v[] = {1, 22, 333};
    std::string line = rec(wire::Writer("samples").field("id", 7).list("tsc", v, 3).field("why", "a b"));
    ASSERT_EQ(line.back(), '\n');
    wire::Record r;
    ASSERT_EQ(wire::parse_line(Str(line.data(), line.size() - 1), r), wire::Error::none);
    EXPECT_EQ(sv(r.type), "samples");
    uint64_t id;
    ASSERT_TRUE(r.get_u64("id", id));
    EXPECT_EQ(id, 7u);
    Str tsc, why;
    ASSERT_TRUE(r.get("tsc", tsc));
    EXPECT_EQ(sv(tsc), "1,22,333");
    ASSERT_TRUE(r.get("why", why));
    EXPECT_EQ(sv(why), "a_b");  // spaces cannot break the record: they become '_'
}

TEST(Wire, EveryFlippedByteIsDetected) {
    std::string line = rec(wire::Writer("end").field("id", 3).field("status", "ok").field("n", 31));
    line.pop_back();
    for (size_t i = 0; i < line.size(); ++i) {
        std::string bad = line;
        bad[i] ^= 0x04;
        wire::Record r;
        wire::Error e = wire::parse_line(Str(bad.data(), bad.size()), r);
        EXPECT_NE(e, wire::Error::none) << "flip at " << i << ": " << bad;
    }
}

TEST(Wire, TruncationIsDetected) {
    std::string line = rec(wire::Writer("end").field("id", 3).field("status", "ok"));
    line.pop_back();
    for (size_t n = 2; n < line.size(); ++n) {
        wire::Record r;
        EXPECT_NE(wire::parse_line(Str(line.data(), n), r), wire::Error::none) << n;
    }
}

TEST(Wire, NoiseIsNotCorruption) {
    wire::Record r;
    EXPECT_EQ(wire::parse_line("SeaBIOS (version 1.16.2)", r), wire::Error::noise);
    EXPECT_EQ(wire::parse_line("FB2 hello #00000000", r), wire::Error::bad_magic);
}

TEST(Wire, OverlongRecordsAreCutAtAFieldAndSaySo) {
    wire::Writer w("log");
    for (int i = 0; i < 200; ++i) w.field("k", "0123456789");
    std::string line = rec(w);
    EXPECT_LE(line.size(), wire::kMaxLine);
    wire::Record r;
    ASSERT_EQ(wire::parse_line(Str(line.data(), line.size() - 1), r), wire::Error::none);
    Str t;
    ASSERT_TRUE(r.get("truncated", t));
}

TEST(LineAssembler, OverlongLinesAreReportedOnceAndSkipped) {
    wire::LineAssembler a;
    std::string junk(3 * wire::kMaxLine, 'x');
    for (char c : junk) EXPECT_FALSE(a.push(c));
    ASSERT_TRUE(a.push('\n'));
    EXPECT_EQ(a.error(), wire::Error::too_long);
    for (char c : std::string("ok")) a.push(c);
    ASSERT_TRUE(a.push('\n'));
    EXPECT_EQ(a.error(), wire::Error::none);
    EXPECT_EQ(sv(a.line()), "ok");
}

// A well-formed cell, as the guest emits it.
std::string cell_stream(uint64_t id, const std::vector<uint64_t>& tsc, const char* status = "ok") {
    std::string s = rec(wire::Writer("cell").field("id", id).field("phase", 0).field("pattern", "wbinvd")
                            .field("footprint", 4096).field("reps", tsc.size()).field("warmup", 1).field("unit", "per-op"));
    for (size_t from = 0; from < tsc.size(); from += wire::kSamplesPerRecord) {
        size_t k = std::min(wire::kSamplesPerRecord, tsc.size() - from);
        s += rec(wire::Writer("samples").field("id", id).field("seq", from).list("tsc", tsc.data() + from, k));
    }
    s += rec(wire::Writer("end").field("id", id).field("status", status).field("n", tsc.size()).field("warmup", 1).field("overhead", 40));
    return s;
}

std::vector<Cell> decode(RecordStream& rs, const std::string& stream) {
    std::vector<Cell> cells;
    rs.on_cell([&](Cell&& c) { cells.push_back(std::move(c)); });
    rs.feed_bytes(stream);
    return cells;
}

TEST(RecordStream, DecodesCellsFromChunksOfAnySize) {
    std::vector<uint64_t> tsc;
    for (uint64_t i = 0; i < 20; ++i) tsc.push_back(1000 + i);
    std::string stream = "SeaBIOS noise\r\n" + cell_stream(0, tsc) + cell_stream(1, tsc);
    for (size_t chunk : {size_t(1), size_t(7), size_t(4096)}) {
        RecordStream rs;
        std::vector<Cell> cells;
        rs.on_cell([&](Cell&& c) { cells.push_back(std::move(c)); });
        for (size_t i = 0; i < stream.size(); i += chunk) rs.feed_bytes(std::string_view(stream).substr(i, chunk));
        ASSERT_EQ(cells.size(), 2u);
        EXPECT_EQ(cells[0].status, CellStatus::ok);
        EXPECT_EQ(cells[0].tsc, tsc);
        EXPECT_EQ(cells[0].tsc_overhead, 40u);
        EXPECT_EQ(cells[0].pattern, "wbinvd");
        EXPECT_EQ(rs.health().noise_lines, 1u);
        EXPECT_EQ(rs.health().corrupt_lines, 0u);
    }
}

TEST(RecordStream, ACorruptedSampleRecordMarksTheCellNeverDropsIt) {
    std::vector<uint64_t> tsc(20, 5000);
    std::string stream = cell_stream(0, tsc);
    size_t at = stream.find("samples");
    stream[at + 20] ^= 1;  // inside the first samples record
    RecordStream rs;
    std::vector<Cell> cells = decode(rs, stream);
    ASSERT_EQ(cells.size(), 1u);
    EXPECT_EQ(cells[0].status, CellStatus::corrupt);
    EXPECT_FALSE(cells[0].reason.empty());
    EXPECT_EQ(rs.health().corrupt_lines, 1u);
}

TEST(RecordStream, AnEndThatDisagreesWithTheSamplesIsCorrupt) {
    std::vector<uint64_t> tsc(4, 5000);
    std::string stream = cell_stream(0, tsc);
    // Re-encode the end record with a different count: valid checksum, wrong claim.
    stream = stream.substr(0, stream.find("FB1 end"));
    stream += rec(wire::Writer("end").field("id", 0).field("status", "ok").field("n", 5).field("warmup", 1).field("overhead", 40));
    RecordStream rs;
    std::vector<Cell> cells = decode(rs, stream);
    ASSERT_EQ(cells.size(), 1u);
    EXPECT_EQ(cells[0].status, CellStatus::corrupt);
}

TEST(RecordStream, SamplesBeyondTheAnnouncedRepsAreRejected) {
    std::string s = rec(wire::Writer("cell").field("id", 0).field("phase", 0).field("pattern", "nop").field("footprint", 0)
                            .field("reps", 2).field("warmup", 0));
    uint64_t v[] = {1, 2, 3};
    s += rec(wire::Writer("samples").field("id", 0).field("seq", 0).list("tsc", v, 3));
    RecordStream rs;
    std::vector<Cell> cells = decode(rs, s);
    ASSERT_EQ(cells.size(), 1u);
    EXPECT_EQ(cells[0].status, CellStatus::corrupt);
}

TEST(RecordStream, ACellLeftOpenIsTheHungOne) {
    std::string s = rec(wire::Writer("cell").field("id", 4).field("phase", 0).field("pattern", "clwb").field("footprint", 4096)
                            .field("reps", 5).field("warmup", 1));
    RecordStream rs;
    rs.feed_bytes(s);
    ASSERT_TRUE(rs.open_cell().has_value());
    EXPECT_EQ(rs.open_cell()->pattern, "clwb");
    EXPECT_EQ(rs.open_cell()->footprint_bytes, 4096u);
}

// A paced step as the guest streams it: cell with pace and ms, the paced record, samples, end.
std::string paced_stream(uint64_t id, const char* pace, const std::vector<uint64_t>& tsc, bool with_paced = true) {
    std::string s = rec(wire::Writer("cell").field("id", id).field("phase", 0).field("pattern", "wbinvd").field("footprint", 65536)
                            .field("reps", 4096).field("warmup", 0).field("unit", "per-op").field("pace", pace).field("ms", 500));
    if (with_paced) s += rec(wire::Writer("paced").field("id", id).field("ops", 50).field("late", 1).field("tsc", 1222500000));
    if (!tsc.empty()) s += rec(wire::Writer("samples").field("id", id).field("seq", 0).list("tsc", tsc.data(), tsc.size()));
    s += rec(wire::Writer("end").field("id", id).field("status", "ok").field("n", tsc.size()).field("warmup", 0).field("overhead", 40));
    return s;
}

TEST(RecordStream, PacedStepsCarryTheirRateCountsAndHostWindow) {
    RecordStream rs;
    std::vector<Cell> cells = decode(rs, paced_stream(0, "100", {2500, 2600}) + paced_stream(1, "idle", {}));
    ASSERT_EQ(cells.size(), 2u);
    ASSERT_TRUE(cells[0].pace.has_value());
    EXPECT_EQ(cells[0].status, CellStatus::ok);
    EXPECT_EQ(cells[0].label(), "wbinvd@100");
    EXPECT_EQ(cells[0].pace->ms, 500u);
    EXPECT_TRUE(cells[0].pace->finished);
    EXPECT_EQ(cells[0].pace->ops, 50u);
    EXPECT_EQ(cells[0].pace->late, 1u);
    EXPECT_EQ(cells[0].pace->elapsed_tsc, 1222500000u);
    EXPECT_GT(cells[0].pace->host_start_ns, 0);
    EXPECT_GE(cells[0].pace->host_end_ns, cells[0].pace->host_start_ns);
    // Idle steps time nothing: ok without samples, and named "idle" whatever their pattern.
    EXPECT_EQ(cells[1].status, CellStatus::ok);
    EXPECT_EQ(cells[1].label(), "idle");
    EXPECT_TRUE(cells[1].tsc.empty());
}

TEST(RecordStream, APacedStepWithoutItsPacedRecordIsCorrupt) {
    RecordStream rs;
    std::vector<Cell> cells = decode(rs, paced_stream(0, "max", {2500}, false));
    ASSERT_EQ(cells.size(), 1u);
    EXPECT_EQ(cells[0].status, CellStatus::corrupt);  // no window: the neighbour could not be matched
}

TEST(RecordStream, MalformedPacesAreProtocolErrors) {
    for (const char* pace : {"0", "fast", "99999999999"}) {
        RecordStream rs;
        std::vector<Cell> cells = decode(rs, paced_stream(0, pace, {1}));
        EXPECT_TRUE(cells.empty()) << pace;
        EXPECT_GE(rs.health().protocol_errors, 1u) << pace;
    }
    RecordStream rs;  // a paced record for an ordinary cell
    std::string s = rec(wire::Writer("cell").field("id", 0).field("phase", 0).field("pattern", "nop").field("footprint", 0)
                            .field("reps", 2).field("warmup", 0));
    s += rec(wire::Writer("paced").field("id", 0).field("ops", 1).field("late", 0).field("tsc", 1));
    decode(rs, s);
    EXPECT_EQ(rs.health().protocol_errors, 1u);
}

TEST(RecordStream, GuestErrorsAreKept) {
    RecordStream rs;
    rs.feed_line(rec(wire::Writer("error").field("msg", "unknown-pattern").field("token", "bogus")));
    ASSERT_TRUE(rs.guest_error().has_value());
    EXPECT_NE(rs.guest_error()->find("bogus"), std::string::npos);
}

}  // namespace
}  // namespace fb
