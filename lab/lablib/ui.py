"""Progress lines, and the two ways a lab run stops early: a missing prerequisite (skip) or an error."""

import sys
import time

SKIP_EXIT = 77  # ctest's SKIP_RETURN_CODE, and automake's convention for "not applicable here"

_t0 = time.monotonic()


class Skip(Exception):
    """A prerequisite of this machine is missing (no QEMU, no package lists, offline): exit 77."""


class LabError(Exception):
    """Something failed that the user can fix; the message names the fix."""


def elapsed():
    return time.monotonic() - _t0


def say(stage, message):
    """One progress line: which stage of the run, what happened."""
    print(f"flushbench-lab: [{stage}] {message}", flush=True)


def warn(message):
    print(f"flushbench-lab: warning: {message}", file=sys.stderr, flush=True)
