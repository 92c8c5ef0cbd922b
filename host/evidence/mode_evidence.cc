#include "host/evidence/mode_evidence.h"
#include "host/sys/clock.h"

#include <time.h>

#include <algorithm>

#include <fmt/format.h>

namespace fb {
using nlohmann::json;

namespace {


std::string joined(const std::vector<std::string>& v, const char* sep) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
    return s;
}

void add_source(std::vector<std::string>& sources, const std::string& s) {
    if (std::find(sources.begin(), sources.end(), s) == sources.end()) sources.push_back(s);
}

}  // namespace

const char* to_string(Verdict v) {
    switch (v) {
        case Verdict::confirmed: return "confirmed";
        case Verdict::contradicted: return "contradicted";
        case Verdict::unverified: return "unverified";
    }
    return "?";
}

Judgement judge(const std::string& mode, const std::vector<AttachedFile>& attached, const std::optional<KvmObservation>& kvm,
                const std::string& kvm_unavailable) {
    bool noncoherent = mode == "noncoherent";
    std::vector<std::string> sources, agree, disagree, silent;

    for (const auto& f : attached) {
        const KernelCoherency& k = f.kernel;
        if (k.says == Coherency::unknown) {
            silent.push_back(fmt::format("{}: {}", f.path, k.detail.empty() ? "no kernel answer" : k.detail));
            continue;
        }
        bool file_nc = k.says == Coherency::noncoherent;
        // A non-coherent phase rests on its non-coherent file (a coherent baseline beside it says
        // nothing either way); a coherent phase needs every attached file to be coherent.
        if (noncoherent && f.role != "noncoherent") continue;
        if (file_nc == noncoherent) {
            add_source(sources, k.source);
            agree.push_back(k.detail);
        } else {
            disagree.push_back(fmt::format("{} ({})", k.detail, file_nc ? "non-coherent" : "coherent"));
        }
    }
    bool has_nc_file = std::any_of(attached.begin(), attached.end(), [](const AttachedFile& f) { return f.role == "noncoherent"; });
    if (noncoherent && !has_nc_file) disagree.push_back("no non-coherent VFIO file is attached");
    if (!noncoherent && attached.empty()) {
        add_source(sources, "no-vfio-file");
        agree.push_back("no VFIO file attached: KVM registers non-coherent DMA only through its KVM-VFIO device");
    }

    if (kvm) {
        if (noncoherent && !kvm->registered) {
            disagree.push_back("KVM did not register non-coherent DMA for this VM (kvm_arch_register_noncoherent_dma not called)");
        } else if (noncoherent && kvm->wbinvd_exits && !kvm->flushes) {
            disagree.push_back(fmt::format("KVM handled {} WBINVD exits without flushing any CPU", kvm->wbinvd_exits));
        } else if (!noncoherent && kvm->registered) {
            disagree.push_back("KVM has non-coherent DMA registered for this VM (kvm_arch_register_noncoherent_dma)");
        } else {
            add_source(sources, "kprobes");
            agree.push_back(noncoherent ? fmt::format("KVM registered non-coherent DMA; {} WBINVD exits, {} CPU flushes", kvm->wbinvd_exits,
                                                      kvm->flushes)
                                        : "KVM has no non-coherent DMA registered");
        }
    } else if (!kvm_unavailable.empty()) {
        silent.push_back("kprobes: " + kvm_unavailable);
    }

    Judgement j;
    if (!disagree.empty()) {
        j.verdict = Verdict::contradicted;
        j.summary = joined(disagree, "; ");
    } else if (!sources.empty()) {
        j.verdict = Verdict::confirmed;
        j.source = joined(sources, "+");
        j.summary = joined(agree, "; ");
    } else {
        j.summary = "no kernel answer: " + (silent.empty() ? std::string("nothing to ask") : joined(silent, "; "));
    }
    return j;
}

json to_json(const PhaseEvidence& p) {
    json files = json::array();
    for (const auto& f : p.attached)
        files.push_back({{"path", f.path}, {"role", f.role},
                         {"kernel", {{"says", to_string(f.kernel.says)}, {"source", f.kernel.source}, {"detail", f.kernel.detail}}}});
    json j = {{"run", p.run},     {"boot", p.boot},       {"phase", p.phase},   {"label", p.label},
              {"mode", p.mode},   {"window_ns", {p.start_ns, p.end_ns}},       {"attached", files},
              {"verdict", to_string(p.judgement.verdict)},                     {"source", p.judgement.source},
              {"summary", p.judgement.summary}};
    if (p.counts) {
        j["kprobes"] = to_json(*p.counts);
        j["kprobes"]["registered"] = p.registered;
    } else {
        j["kprobes"] = {{"unavailable", p.kprobes}};
    }
    return j;
}

std::optional<KvmObservation> ModeWitness::observe(const CoherencyCounts& since) const {
    if (!probes_.available()) return std::nullopt;
    CoherencyCounts now = probes_.read();
    CoherencyCounts d = now - since;
    return KvmObservation{now.noncoherent_registered(), d.wbinvd_exits, d.flushes()};
}

void ModeWitness::judge_open() {
    PhaseEvidence& p = phases_.back();
    auto obs = observe(at_phase_start_);
    p.registered = obs && obs->registered;
    p.judgement = judge(p.mode, p.attached, obs, probes_.unavailable());
}

const PhaseEvidence& ModeWitness::begin(uint32_t phase, const std::string& label, const std::string& mode,
                                        const std::function<std::vector<AttachedFile>()>& attach) {
    end();
    PhaseEvidence p;
    p.run = run_, p.boot = boot_, p.phase = phase, p.label = label, p.mode = mode;
    p.start_ns = monotonic_ns();
    p.kprobes = probes_.unavailable();
    at_phase_start_ = probes_.read();
    p.attached = attach();
    at_cell_start_ = probes_.read();
    phases_.push_back(std::move(p));
    open_ = true;
    judge_open();
    return phases_.back();
}

const PhaseEvidence& ModeWitness::recheck() {
    if (open_) judge_open();
    return phases_.back();
}

void ModeWitness::end() {
    if (!open_) return;
    open_ = false;
    PhaseEvidence& p = phases_.back();
    p.end_ns = monotonic_ns();
    if (probes_.available()) p.counts = probes_.read() - at_phase_start_;
    // The phase's WBINVD work is all in now; KVM's registration is kept as the phase saw it when
    // judged: a QEMU boot unregisters on its way out, inside the window but after every cell.
    auto obs = observe(at_phase_start_);
    if (obs) obs->registered = p.registered;
    p.judgement = judge(p.mode, p.attached, obs, probes_.unavailable());
}

void ModeWitness::cell_begin() { at_cell_start_ = probes_.read(); }

json ModeWitness::cell_end() {
    if (phases_.empty()) return {{"verdict", "unverified"}, {"summary", "no phase began"}};
    const PhaseEvidence& p = phases_.back();
    Judgement j = p.judgement;
    json e = {{"run", p.run}, {"boot", p.boot}, {"phase", p.phase}};
    if (probes_.available()) {
        CoherencyCounts d = probes_.read() - at_cell_start_;
        e.update(to_json(d));
        e.erase("register"), e.erase("unregister");
        if (d.wbinvd_exits) e["flushes_per_wbinvd"] = double(d.flushes()) / double(d.wbinvd_exits);
        Judgement cell = judge(p.mode, p.attached, KvmObservation{p.registered, d.wbinvd_exits, d.flushes()}, "");
        if (cell.verdict == Verdict::contradicted) j = cell;
    } else {
        e["kprobes"] = "unavailable: " + probes_.unavailable();
    }
    e["verdict"] = to_string(j.verdict);
    e["source"] = j.source;
    e["summary"] = j.summary;
    return e;
}

std::string contradiction_message(const PhaseEvidence& p) {
    std::string fix = p.mode == "noncoherent"
                          ? "attach a VFIO file whose IOMMU lacks snoop control (Intel VT-d ECAP bit 7 clear, or an mdev); "
                            "`flushbench probe` lists them"
                          : "detach the non-coherent files, or use a coherent --vfio-baseline";
    return fmt::format("the kernel contradicts the {} label of phase {} (run {}, boot {}): {}; nothing was written under that label. Fix: {}",
                       p.mode, p.label, p.run + 1, p.boot + 1, p.judgement.summary, fix);
}

}  // namespace fb
