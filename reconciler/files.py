"""Files that hold users (plans, exports, journal, lock): private, atomic, never through a symlink.

Saved plans, exports, the journal and the lock name users (UPNs), so they are created
readable by their owner only (0600). A plan or an export is written whole or not at
all (a temporary file in the same folder, then a rename). A path that is a symbolic
link is refused rather than followed, and an output never replaces one of the
command's own inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.errors import ReconcilerError

PRIVATE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def refuse_symlink(path):
    if Path(path).is_symlink():
        raise ReconcilerError(f"{path}: is a symbolic link; syncprep does not write through one (remove it, or choose another path)")


def same_file(a, b):
    """Whether two paths name one file (also through links, and before ``b`` exists)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_inputs(path, inputs):
    """``inputs`` maps a description ("the desired-state file") to a path, or None."""
    for what, other in inputs.items():
        if other is not None and same_place(path, other):
            raise ReconcilerError(f"{path}: is {what} this command reads; write the output somewhere else (nothing was written)")


def same_place(path, other):
    """The same file, or (for one that does not exist yet, such as a change log the command may
    write) the same place."""
    if Path(other).exists():
        return same_file(path, other)
    try:
        return Path(path).resolve() == Path(other).resolve()
    except OSError:
        return False


def write_private(path, text, inputs=None):
    """Write ``text`` to ``path`` atomically, mode 0600; refuse a symlink or one of ``inputs``."""
    path = Path(path)
    refuse_symlink(path)
    refuse_inputs(path, inputs or {})
    import secrets  # with hmac and random: only a write needs them (issue 19)

    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def open_append_private(path):
    """A file object appending to ``path`` (created 0600), refusing a symlink."""
    path = Path(path)
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, PRIVATE)
    except OSError as exc:
        if path.is_symlink():
            raise ReconcilerError(f"{path}: is a symbolic link; syncprep does not write through one") from None
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


def make_private_dir(path):
    """Create ``path`` (mode 0700 when it is new)."""
    Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
