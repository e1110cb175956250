"""Migration waves: the users of a ``[[licenses]]`` entry read from a CSV file.

Migration tools export each batch of mailboxes as a CSV file. An entry with
``users_file = "waves/wave-03.csv"`` licenses the users in it, so one wave is one
reviewed change. The column is ``users_column`` or, without it, the first header
that is one of :data:`HEADERS` (case does not matter). The file is read relative to
the desired-state file, and its SHA-256 goes into what a saved plan is bound to.

Every problem is one line naming the CSV file and its line (``wave.csv:7: ...``).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

#: Headers that hold the user's address, in the order they are looked for.
HEADERS = ("UserPrincipalName", "Email", "PrimarySmtpAddress")
MAX_WAVE_BYTES = 16 * 1024 * 1024


class WaveError(Exception):
    """A wave file that cannot be used; ``lines`` are the problems, one per line."""

    def __init__(self, lines):
        super().__init__("; ".join(lines))
        self.lines = list(lines)


def wave_path(users_file, source):
    """Where ``users_file`` is: relative to the desired-state file ``source``."""
    path = Path(users_file)
    if path.is_absolute() or source.startswith("<"):
        return path
    return Path(source).parent / path


def read_wave(users_file, source, column=None, valid=None):
    """The addresses in a wave file, in file order, and its SHA-256; raises :class:`WaveError`.

    ``valid`` (a compiled pattern) checks each address; a value it rejects, an empty
    cell and an address listed twice are each a problem naming the line.
    """
    path = wave_path(users_file, source)
    shown = str(path)
    try:
        if path.is_symlink() or not path.is_file():
            raise WaveError([f"{shown}: no such file" if not path.exists() else f"{shown}: not a regular file"])
        data = path.read_bytes()
    except OSError as exc:
        raise WaveError([f"{shown}: cannot be read: {exc.strerror}"]) from None
    if len(data) > MAX_WAVE_BYTES:
        raise WaveError([f"{shown}: {len(data)} bytes is over the {MAX_WAVE_BYTES}-byte limit for a wave file"])
    try:
        text = data.decode("utf-8-sig")  # migration tools write a byte order mark
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WaveError([f"{shown}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x})"]) from None
    return _addresses(text, shown, column, valid), hashlib.sha256(data).hexdigest()


def _addresses(text, shown, column, valid):
    import csv  # only for a wave file: a plan without one does not pay for it

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        index = _column(header, shown, column)
        found, problems, seen = [], [], {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            value = row[index].strip() if index < len(row) else ""
            if not value:
                problems.append(f"{shown}:{line}: no value in column {header[index]!r}")
            elif valid is not None and not valid.match(value):
                problems.append(f"{shown}:{line}: {value!r} is not a valid user principal name (name@domain.tld)")
            elif value.lower() in seen:
                problems.append(f"{shown}:{line}: {value} is listed twice (also line {seen[value.lower()]})")
            else:
                seen[value.lower()] = line
                found.append(value)
    except csv.Error as exc:
        raise WaveError([f"{shown}:{reader.line_num}: not valid CSV: {exc}"]) from None
    if problems:
        raise WaveError(problems)
    if not found:
        raise WaveError([f"{shown}: names no users"])
    return tuple(found)


def _column(header, shown, column):
    if not header or not any(cell.strip() for cell in header):
        raise WaveError([f"{shown}:1: no header line (expected a column {' or '.join(HEADERS)})"])
    names = [cell.strip() for cell in header]
    wanted = (column,) if column else HEADERS
    for name in wanted:
        for index, cell in enumerate(names):
            if cell.lower() == name.lower():
                return index
    have = ", ".join(repr(n) for n in names)
    if column:
        raise WaveError([f"{shown}:1: no column {column!r} (users_column); the header has {have}"])
    raise WaveError([f"{shown}:1: no column {', '.join(HEADERS)} to read users from (the header has {have}); name one with users_column"])
