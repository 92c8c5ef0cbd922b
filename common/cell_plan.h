// The cells of a run in the one order every side numbers them: phase by phase; within a phase the
// patterns as asked, each over the footprints (once if it takes none), then the paced slots of
// pace_schedule(). The guest runs them in this order, the host names the ones a crash left unrun,
// and flushbench-native registers them, all from this walk: a cell id means the same thing to all.
#pragma once

#include "common/config.h"

namespace fb {

struct PlannedCell {
    uint32_t id;                     // across phases: phase * cells_per_phase + index in the phase
    uint32_t phase;
    const Pattern* pattern;
    const FootprintSpec* footprint;  // nullptr: the pattern takes no footprint
    const PaceStep* step;            // a paced slot's step; nullptr for a measured cell
    PacedSlot slot;                  // a paced slot's place in the schedule
};

// Calls visit(const PlannedCell&) for every cell of `phase`, in id order.
template <class Visit>
void for_each_cell_of_phase(const Config& c, uint32_t phase, Visit&& visit) {
    uint32_t id = phase * cells_per_phase(c);
    for (size_t i = 0; i < c.pattern_count; ++i) {
        const Pattern& p = kPatterns[c.pattern_order[i]];
        if (!p.uses_footprint) {
            visit(PlannedCell{id++, phase, &p, nullptr, nullptr, {}});
            continue;
        }
        for (size_t f = 0; f < c.footprint_count; ++f) visit(PlannedCell{id++, phase, &p, &c.footprints[f], nullptr, {}});
    }
    PacedSlot slots[kMaxPacedSlots];
    for (uint32_t i = 0, n = pace_schedule(c, slots); i < n; ++i) {
        const PaceStep& step = c.pace[slots[i].step];
        const Pattern& p = kPatterns[step.pattern];
        visit(PlannedCell{id++, phase, &p, p.uses_footprint ? &c.pace_footprint : nullptr, &step, slots[i]});
    }
}

// Every cell of every phase (c.phases of them), in id order.
template <class Visit>
void for_each_cell(const Config& c, Visit&& visit) {
    for (uint32_t phase = 0; phase < c.phases; ++phase) for_each_cell_of_phase(c, phase, visit);
}

// The index of a footprint in c.footprints (the guest's `config` record lists them resolved in
// this order), or -1 for the pace footprint and for patterns without one.
inline int footprint_index(const Config& c, const FootprintSpec* f) {
    return f && f >= c.footprints && f < c.footprints + c.footprint_count ? int(f - c.footprints) : -1;
}

}  // namespace fb
