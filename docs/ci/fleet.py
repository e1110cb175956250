#!/usr/bin/env python3
"""The fleet's matrix for the syncprep workflows: one job per target, one target per file.

Copy to ``.github/syncprep/fleet.py`` (the workflows run it from there). Standard library
only: the job that runs it installs nothing.

An MSP's repository keeps one desired-state file per customer target,
``desired-state/<target>.toml``; ``<target>`` (lower-case letters, digits, hyphens) names
the target's GitHub environments (``syncprep-<target>-plan``, ``-sign`` and
``syncprep-<target>``) and its concurrency group.

    fleet.py targets [--changed BASE HEAD]   the matrix: every target, or those whose file the
                                             commits BASE..HEAD add or change (a deleted file plans
                                             nothing); JSON on stdout, and "matrix=" / "count=" in
                                             $GITHUB_OUTPUT when it is set
    fleet.py summary FOLDER                  one Markdown table across the fleet from the drift jobs'
                                             results: FOLDER/<anything>/<target>.json (drift --json)
                                             and <target>.exit (its exit code); a target whose job left
                                             nothing is "unknown"; UPNs are masked
                                             unless --show-users
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

FOLDER = "desired-state"
TARGET = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
STATES = {0: "in sync", 2: "drift", 3: "unknown"}


class FleetError(Exception):
    pass


def target_of(path):
    """``desired-state/contoso.toml`` -> ``contoso``; a name that cannot name an environment is an error."""
    name = Path(path).stem
    if not TARGET.fullmatch(name):
        raise FleetError(f"{path}: a target's file is named <target>.toml with <target> in lower-case letters, digits and hyphens")
    return name


def is_target_file(path):
    parts = Path(path).parts
    return len(parts) == 2 and parts[0] == FOLDER and parts[1].endswith(".toml")


def all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in (Path(root) / FOLDER).glob("*.toml"))


def changed_files(root, base, head):
    """The target files that the commits base..head add or modify (and that exist at head)."""
    out = subprocess.run(
        ["git", "diff", "--name-only", "--no-renames", "--diff-filter=AM", f"{base}...{head}", "--", f"{FOLDER}/"],
        cwd=root, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise FleetError(f"git diff {base}...{head}: {out.stderr.strip() or out.returncode}")
    return sorted(p for p in out.stdout.splitlines() if is_target_file(p))


def matrix(files):
    include = [{"target": target_of(f), "file": f} for f in files]
    seen = {}
    for item in include:
        if item["target"] in seen:
            raise FleetError(f"{item['file']} and {seen[item['target']]} name the same target")
        seen[item["target"]] = item["file"]
    return {"include": include}


UPN = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def summary(folder, mask_users=True):
    """The fleet's drift as one Markdown table (and whether anything drifted or is unknown);
    user principal names are replaced by "a user" unless ``mask_users`` is False."""
    results = {}
    for exit_file in sorted(Path(folder).rglob("*.exit")):
        target = exit_file.stem
        report_file = exit_file.with_suffix(".json")
        try:
            code = int(exit_file.read_text().strip())
        except ValueError:
            code = 1
        try:
            report = json.loads(report_file.read_text()) if report_file.exists() else {}
        except json.JSONDecodeError:
            report = {}
        results[target] = (code, report)
    return _table(results, mask_users)


def _table(results, mask_users=True):
    lines = ["## syncprep drift across the fleet", "", "| target | state | what drifted |", "| --- | --- | --- |"]
    counts = {}
    for target, (code, report) in sorted(results.items()):
        state = STATES.get(code, "unknown (the job failed)")
        counts[state.split(" (")[0]] = counts.get(state.split(" (")[0], 0) + 1
        what = [f"{d.get('resource')}: {d.get('what')}" for d in report.get("drift", [])]
        what += [f"could not read {u}" for u in report.get("unknown", [])]
        if report.get("interrupted_apply"):
            what.append(str(report["interrupted_apply"]))
        text = "; ".join(what)
        if mask_users:
            text = UPN.sub("a user", text)
        lines.append(f"| {target} | {state} | {_cell(text) or '—'} |")
    lines += ["", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no target reported"]
    return "\n".join(lines) + "\n", any(code != 0 for code, _report in results.values())


def _cell(text, limit=500):
    # No @mentions, no table breaks, no runaway rows.
    text = text.replace("|", "\\|").replace("\n", " ").replace("@", "@\u200b")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fleet.py", description="the syncprep workflows' matrix over the fleet")
    commands = parser.add_subparsers(dest="command", required=True)
    targets = commands.add_parser("targets")
    targets.add_argument("--changed", nargs=2, metavar=("BASE", "HEAD"))
    targets.add_argument("--root", default=".")
    report = commands.add_parser("summary")
    report.add_argument("folder")
    report.add_argument("--show-users", action="store_true", help="keep user principal names (masked by default)")
    args = parser.parse_args(argv)
    try:
        if args.command == "targets":
            files = changed_files(args.root, *args.changed) if args.changed else all_files(args.root)
            result = matrix(files)
            print(json.dumps(result))
            _output(matrix=json.dumps(result, separators=(",", ":")), count=str(len(result["include"])))
        else:
            text, _anything = summary(args.folder, mask_users=not args.show_users)
            sys.stdout.write(text)
    except FleetError as exc:
        print(f"fleet.py: {exc}", file=sys.stderr)
        return 1
    return 0


def _output(**values):
    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            for key, value in values.items():
                fh.write(f"{key}={value}\n")


if __name__ == "__main__":
    sys.exit(main())
