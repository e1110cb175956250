"""Diagnostics on stderr (``--log-level``), every record scrubbed of credentials."""

from __future__ import annotations

import sys

from reconciler.cli.options import LOG_LEVEL_ENV, scrub

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level):
    """``--log-level``: records of every library on stderr, each one scrubbed of credentials."""
    if not level:
        return
    import logging

    if level.upper() not in LEVELS:
        raise SystemExit(f"syncprep: error: {LOG_LEVEL_ENV}={level!r}: choose DEBUG, INFO, WARNING or ERROR")

    class _Stderr(logging.StreamHandler):
        # Whatever sys.stderr is when a record comes (tests and wrappers replace it).
        stream = property(lambda self: sys.stderr, lambda self, value: None)

    handler = _Stderr()
    handler.addFilter(ScrubRecords())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


class ScrubRecords:
    """A logging filter that rewrites each record's text (traceback included) without credentials."""

    def filter(self, record):
        import logging

        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
