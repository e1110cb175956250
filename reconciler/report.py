"""``--report FILE``: the per-user outcome of a plan or an apply, untruncated, as CSV or JSON.

The format follows the file's extension (``.csv`` or ``.json``). One row per user
and licence set: UPN, object type, SKU, wave and licensing group (where the entry
names them), licence and mailbox before and after, the
predicted outcome and, after an apply, what was read back from the tenant.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from reconciler.errors import ReconcilerError

#: The version of the JSON report (schemas/report.json). 1: issue 17, the first versioned.
REPORT_FORMAT_VERSION = 1

COLUMNS = (
    "upn",
    "object_type",
    "sku",
    "wave",
    "group",
    "licence_before",
    "licence_after",
    "mailbox_before",
    "mailbox_after",
    "outcome",
    "code",
    "reason",
    "licence_actual",
    "mailbox_actual",
    "as_desired",
)


def check_path(path, inputs=None):
    """Refuse, before anything is done, an extension this writer does not know, a symbolic
    link, or one of the command's own inputs (``inputs`` maps a description to a path)."""
    from reconciler.files import refuse_inputs, refuse_symlink

    if Path(path).suffix.lower() not in (".csv", ".json"):
        raise ReconcilerError(f"--report {path}: the file name must end in .csv or .json")
    refuse_symlink(path)
    refuse_inputs(path, inputs or {})


def plan_rows(plan):
    return [o.to_dict() for o in plan.outcomes]


def write(rows, path, inputs=None):
    """Write the rows (they name users: 0600, atomic, never through a symlink nor over ``inputs``)."""
    from reconciler.files import write_private

    check_path(path, inputs)
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps({"format_version": REPORT_FORMAT_VERSION, "users": rows}, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in COLUMNS})
        text = buffer.getvalue()
    write_private(path, text, inputs)
