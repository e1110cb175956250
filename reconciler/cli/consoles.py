"""The consoles the verbs print to: rich's, except when the output is closed early.

A pipe whose reader stopped (``syncprep plan | head -1``) makes rich end the process with
``SystemExit(1)``, which would also cut short the code that puts things back. Here the first
write to a closed output raises ``BrokenPipeError`` like any other write, and ``main`` turns it
into exit code 141 (128 + SIGPIPE: what a shell reports for a command a closed pipe stopped).
Once a verb has started what must run to its end (an approved apply, a sync), it sets
``keep_going``: a closed output then raises nothing and what follows is dropped.
"""

from __future__ import annotations

import errno

from rich.console import Console as _RichConsole


class Console(_RichConsole):
    #: A closed output stops nothing (what is printed after is dropped).
    keep_going = False

    #: What writing the stream raised when it failed other than by a closed pipe (a full disk).
    failed = None

    def _check_buffer(self):
        try:
            super()._check_buffer()
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError):
                self.failed = exc
            raise

    def on_broken_pipe(self):
        self.quiet = True  # nothing more reaches a closed output
        if not self.keep_going:
            raise BrokenPipeError(errno.EPIPE, "the output was closed")
