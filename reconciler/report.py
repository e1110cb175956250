"""``--report FILE``: the per-user outcome of a plan or an apply, untruncated, as CSV or JSON.

The format follows the file's extension (``.csv`` or ``.json``). One row per user
and licence set: UPN, object type, licence and mailbox before and after, the
predicted outcome and, after an apply, what was read back from the tenant.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from reconciler.errors import ReconcilerError

COLUMNS = (
    "upn",
    "object_type",
    "sku",
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


def check_path(path):
    """Refuse an extension this writer does not know before anything is done."""
    if Path(path).suffix.lower() not in (".csv", ".json"):
        raise ReconcilerError(f"--report {path}: the file name must end in .csv or .json")


def plan_rows(plan):
    return [o.to_dict() for o in plan.outcomes]


def write(rows, path):
    check_path(path)
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps({"users": rows}, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in COLUMNS})
        text = buffer.getvalue()
    path.write_text(text, encoding="utf-8")
