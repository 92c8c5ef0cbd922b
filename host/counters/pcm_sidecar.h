// Intel PCM's pcm-memory as a sidecar process during a phase: memory-controller read and write
// bandwidth for the whole machine. A WBINVD under non-coherent DMA writes every dirty line back to
// DRAM; that write traffic is the physical cost of the flush, and only the uncore counters see it.
//
// pcm-memory needs an Intel server CPU it knows, root and /dev/cpu/*/msr (modprobe msr), and a host
// (not a guest) or a VM with a vPMU. Elsewhere it refuses with its own message, which becomes the
// `unavailable` reason: flushbench runs it anyway and reports what PCM says, instead of guessing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fb {

class PcmSidecar {
   public:
    // Starts `pcm-memory <interval_s> -csv=<tmp file> -nc` in the background (PATH, then /usr/sbin,
    // /usr/local/sbin). Never throws for a host without PCM: stop() then reports `unavailable`.
    static PcmSidecar start(double interval_s);

    // Ends pcm-memory (SIGINT, so it restores the uncore PMU state; SIGKILL after 5 s) and returns
    //   {source: "pcm-memory", interval_s, duration_s, samples,
    //    read_mbps: {mean, max}, write_mbps: {mean, max}, memory_mbps: {mean, max}}
    // or {source: "pcm-memory", unavailable: "<PCM's own words> (<what this host lacks>)"}.
    // Once; a second call returns the same unavailable reason as a never-started sidecar would.
    nlohmann::json stop();

    PcmSidecar(PcmSidecar&& o) noexcept;
    PcmSidecar& operator=(PcmSidecar&& o) noexcept;
    PcmSidecar(const PcmSidecar&) = delete;
    PcmSidecar& operator=(const PcmSidecar&) = delete;
    ~PcmSidecar();  // a running pcm-memory is stopped, its files removed

   private:
    PcmSidecar() = default;
    void cleanup();

    pid_t pid_ = -1;
    double interval_s_ = 0;
    std::string dir_;  // private temp dir holding pcm.csv and pcm.log
    std::string unavailable_;
    std::string host_notes_;  // "vendor AuthenticAMD; /dev/cpu/0/msr missing (modprobe msr)"
    std::chrono::steady_clock::time_point started_;
};

// pcm-memory -csv output: a row of socket/"System" labels, a row of column names ("Date,Time,...,
// Read,Write,Memory"), then one row per interval. Means and maxima of the System Read / Write /
// Memory columns (MB/s); {"samples": 0} when there is no data row.
nlohmann::json parse_pcm_memory_csv(std::string_view csv);

// The lines of PCM's console output that say why it gave up ("ERROR: ...", "Unsupported processor
// model", "Only Intel processors are supported"), joined with "; ". Empty if none does.
std::string pcm_failure_reason(std::string_view output);

}  // namespace fb
