"""The consoles the verbs print to: rich's, except when the output is closed early.

A pipe whose reader stopped (``syncprep plan | head -1``) makes rich end the process with
``SystemExit(1)``, which would also cut short the code that puts things back. Here the first
write to a closed output raises ``BrokenPipeError`` like any other write, and ``main`` turns it
into exit code 141 (128 + SIGPIPE: what a shell reports for a command a closed pipe stopped).
Once a verb has started what must run to its end (an approved apply, a sync), it sets
``keep_going``: an output that is closed, or fails otherwise (a full disk), then raises nothing
and what follows is dropped; ``main`` says a failed one when the command has ended.

Every write reaches the stream through :class:`_Recorded` (``console.file``), whether rich
prints it or a verb writes it whole (``--json``, ``export``, ``completion``): an output that
fails other than by a closed pipe (a full disk) is recorded in ``failed``, whichever wrote.
"""

from __future__ import annotations

import errno

from rich.console import Console as _RichConsole


class _Recorded:
    """``console``'s stream, whose failed writes and flushes the console records. Each write is
    flushed: what a verb writes whole fails at its write, not unseen in Python's flush at exit."""

    def __init__(self, stream, console):
        self.stream, self.console = stream, console

    def write(self, text):
        if self.console.dropping:
            return len(text)
        try:
            written = self.stream.write(text)
            self.stream.flush()
        except OSError as exc:
            if not self.console.note_failure(exc):
                raise
            return len(text)
        return written

    def flush(self):
        if self.console.dropping:
            return
        try:
            self.stream.flush()
        except OSError as exc:
            if not self.console.note_failure(exc):
                raise

    def __getattr__(self, name):  # isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)


class Console(_RichConsole):
    #: A closed output stops nothing (what is printed after is dropped).
    keep_going = False

    #: What writing the stream raised when it failed other than by a closed pipe (a full disk).
    failed = None

    #: The output failed while ``keep_going``: what is written from then on is dropped.
    dropping = False

    _recorded = None

    @property
    def file(self):
        """The stream rich would write to (it follows ``sys.stdout``), seen through :class:`_Recorded`."""
        stream = _RichConsole.file.fget(self)
        if self._recorded is None or self._recorded.stream is not stream:
            self._recorded = _Recorded(stream, self)
        return self._recorded

    @file.setter
    def file(self, stream):
        self._file = stream

    def note_failure(self, exc):
        """``exc`` came from writing the stream: a failure other than a closed pipe is kept.
        Whether it is dropped (``keep_going``: the output, closed or failed, stops nothing)."""
        if not isinstance(exc, BrokenPipeError):
            self.failed = exc
        if self.keep_going:
            self.quiet = self.dropping = True
        return self.keep_going

    def on_broken_pipe(self):
        self.quiet = True  # nothing more reaches a closed output
        if not self.keep_going:
            raise BrokenPipeError(errno.EPIPE, "the output was closed")
