// A fleet run's results side by side (`flushbench compare results/fleet/<run>`): one directory per
// host, as fleet/site.yml fetches them (results.json, probe.json, status.json), hosts grouped by
// what their probe and mode evidence say about them, and every host's cells against a chosen
// baseline host or group, as ratios of medians with bootstrap intervals (compare_samples()).
//
// Hosts of one machine kind can differ in what matters here, so they are grouped by four facets:
// snoop control (from the kernel's mode evidence in the results, else the probe's IOMMU and
// regime), the kernel's version range (the KVM/VFIO changes at 6.2 and 6.17, host/env/regime.h),
// CPU vendor and model, and KVM flavour. A host name in the table is the inventory's, not the
// machine's hostname: two inventory hosts may be one machine.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/compare.h"

namespace fb {

// Bad input (not a fleet directory, a baseline that names nothing): one line with the fix.
struct FleetInputError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct HostFacets {
    std::string snoop;  // snoop-control, no-snoop-control, no-iommu or snoop-unknown
    std::string snoop_evidence;  // what said so
    std::string kernel;  // linux<6.2, linux6.2-6.16, linux6.17+ or linux-unknown
    std::string kernel_release;
    std::string cpu;  // vendor and model name
    std::string kvm;  // KVM flavour: vmx, svm, or the module (kvm_pvm)
};

// From a results file (null if none) and `flushbench probe --json` output (null if none).
HostFacets host_facets(const nlohmann::json& results, const nlohmann::json& probe);

struct FleetHost {
    std::string name;  // the directory's name: the inventory host
    nlohmann::json results, probe, status;  // null where the file is absent
    std::string unavailable;  // why there are no results to compare; empty when there are
    HostFacets facets;
};

struct Fleet {
    std::string dir;
    nlohmann::json record;  // fleet.json, written by the playbook (null if absent)
    std::vector<FleetHost> hosts;  // by name
};

// Reads every host directory of dir; a damaged file makes its host unavailable, never the fleet.
// Throws FleetInputError when dir holds no host directory.
Fleet load_fleet(const std::string& dir);

// baseline: a host, a group id (G1), a group's name, or a facet value (e.g. snoop-control) naming
// the hosts that share it; empty: the first group when there are several (hosts with snoop control
// first), else the first host. Throws FleetInputError for a baseline that names no host with results.
//
// {"fleet", "run", "commit", "ship", "alpha", "statistic", "baseline": {name, kind, hosts},
//  "groups": [{id, name, facets, snoop_evidence, kernels, hosts}], "hosts": [{name, group, state,
//  stage, reason, exit_code, results, unavailable, cells, statuses, verdicts, emulated, fingerprint}],
//  "rows": [{pattern, footprint_bytes, backend, mode, unit, "baseline": {mode, n, median, median_ci,
//  hosts} | null, "cells": [{host, status, reason, n, median, median_ci, in_baseline, ratio,
//  ratio_ci, p_value, significant, note}]}]}
nlohmann::json compare_fleet(const Fleet& fleet, const std::string& baseline = "", double alpha = kSignificance);

// The terminal table: groups, hosts (with why any has no results), then one line per
// (pattern, footprint, backend, mode) with the hosts side by side.
std::string format_fleet_table(const nlohmann::json& comparison);

}  // namespace fb
