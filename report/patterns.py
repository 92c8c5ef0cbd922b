"""flushbench's pattern table, as the results say it: which patterns exist, in which order, what
each does, its memory type and the operation it performs.

The table is common/patterns.h's. A results file carries it as context.flushbench.patterns; for a
file written before flushbench recorded it, the table comes from `flushbench patterns --json` run
on FLUSHBENCH_BIN (`flushbench report` sets it to itself). The report states nothing about a pattern
of its own, so a new pattern needs no change here, and a pattern the table lacks is still reported,
under its raw name, after the known ones."""

import json
import subprocess

from .errors import ReportError

FIX = "run it through `flushbench report`, or set FLUSHBENCH_BIN to the flushbench binary"


class MemtypeGrid:
    """The memory-type group (group "memtype"): each pattern is one operation on a buffer of one
    memory type. Operations and memory types keep the table's order."""

    def __init__(self, entries):
        self.cells = {(operation_of(e), e.get("memtype", "?")): e["name"] for e in entries}
        self.operations = list(dict.fromkeys(op for op, _ in self.cells))
        self.memtypes = list(dict.fromkeys(mt for _, mt in self.cells))

    def pattern(self, operation, memtype):
        return self.cells.get((operation, memtype))

    def patterns_of(self, operation):
        return [p for (op, _), p in self.cells.items() if op == operation]


def operation_of(entry):
    """What the pattern's body does, shared across memory types; a table without the key (flushbench
    before it grouped them) makes each pattern its own operation."""
    return entry.get("operation", entry["name"])


class PatternTable:
    def __init__(self, entries):
        self.entries = {}
        for e in entries:
            self.entries.setdefault(e["name"], e)
        self._index = {name: i for i, name in enumerate(self.entries)}
        self.memtype_grid = MemtypeGrid([e for e in self.entries.values() if e.get("group") == "memtype"])

    def knows(self, name):
        return name in self.entries

    def key(self, name):
        """Sort key: table order, then the patterns the table lacks, by name."""
        return (self._index.get(name, len(self._index)), name)

    def what(self, name):
        return self.entries.get(name, {}).get("what", "")


def _checked(table, source):
    if not isinstance(table, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in table):
        raise ReportError(f"{source}: a damaged pattern table (a list of objects with a name expected)")
    return table


def recorded(doc, path):
    """The table a results file carries, or None when it was written without one."""
    fb = doc.get("context", {}).get("flushbench", {})
    if "patterns" not in fb:
        return None
    return _checked(fb["patterns"], f"{path}: context.flushbench.patterns")


def from_binary(path, exe):
    """`EXE patterns --json`'s table, for a results file (path) that carries none."""
    if not exe:
        raise ReportError(f"{path} carries no pattern table (context.flushbench.patterns) and FLUSHBENCH_BIN is not set: {FIX}")
    try:
        done = subprocess.run([exe, "patterns", "--json"], capture_output=True, text=True, timeout=60, check=True)
        table = json.loads(done.stdout).get("patterns")
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError) as exc:
        raise ReportError(f"{path} carries no pattern table and `{exe} patterns --json` failed ({exc}): {FIX}") from None
    return _checked(table, f"`{exe} patterns --json`")


def table_for(docs, paths, exe):
    """One table for several results files: each file's own, else the binary's (asked once)."""
    entries, binary = [], None
    for doc, path in zip(docs, paths):
        table = recorded(doc, path)
        if table is None:
            binary = binary or from_binary(path, exe)
            table = binary
        entries += table
    return PatternTable(entries)
