"""The lab file: the lab's whole state as versioned JSON.

Format (version 1)::

    {"format": "syncprep-lab", "version": 1, "lab": { ...the Lab, unstructured... }}

A file of another format or a newer version is refused with one line; writes go
to a temporary file that is renamed over the old one, so a crash never leaves a
half-written lab.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cattrs

from reconciler.errors import LabError
from providers.lab.world import Lab

FORMAT = "syncprep-lab"
VERSION = 1
DEFAULT_PATH = Path(".syncprep") / "lab.json"

_converter = cattrs.Converter(forbid_extra_keys=True)


def dumps(lab):
    return json.dumps({"format": FORMAT, "version": VERSION, "lab": _converter.unstructure(lab)}, separators=(",", ":"))


def loads(text, source="lab file"):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"{source}: not a lab file: invalid JSON at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise LabError(f"{source}: not a syncprep lab file (no \"format\": \"{FORMAT}\")")
    version = document.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise LabError(f"{source}: lab format version {version!r} is newer than this syncprep reads ({VERSION}); upgrade syncprep or run 'syncprep lab init --force'")
    try:
        return _converter.structure(document["lab"], Lab)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        detail = "; ".join(cattrs.transform_error(exc)[:3]) if isinstance(exc, cattrs.BaseValidationError) else str(exc)
        raise LabError(f"{source}: corrupt lab file: {detail}") from None


def load(path):
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabError(f"{path}: no lab here; create one with 'syncprep lab init'") from None
    except OSError as exc:
        raise LabError(f"{path}: cannot read the lab file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LabError(f"{path}: corrupt lab file: not UTF-8") from None
    return loads(text, str(path))


def save(lab, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lab-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(lab))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_or_create(path, users=20):
    """The lab at ``path``, created from the default scenario on first use."""
    from providers.lab import scenario

    path = Path(path)
    if path.exists():
        return load(path), False
    # Only the default .syncprep/ is made on first use: a mistyped --lab makes no folders.
    if not path.parent.exists() and path.parent.resolve() != DEFAULT_PATH.parent.resolve():
        raise LabError(f"{path}: the folder {path.parent} does not exist")
    lab = scenario.build("default", users=users)
    save(lab, path)
    return lab, True
