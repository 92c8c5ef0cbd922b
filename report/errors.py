"""ReportError: bad input or environment, which __main__ prints as one line and exits 2 with.

Modules raise it rather than exit, so that they can be tested and reused."""


class ReportError(Exception):
    """What is wrong and how to fix it, in one line."""
