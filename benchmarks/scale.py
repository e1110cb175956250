"""Speed and scale, measured side by side in one run (issue 8). Run by hand:

    .venv/bin/python benchmarks/scale.py              # everything (about 3-4 minutes)
    .venv/bin/python benchmarks/scale.py --quick      # smaller sizes, for a smoke run

It prints:

1. start-up: ``syncprep --help`` and ``syncprep validate`` against ``python -c pass``
   and against a bare ``from msgraph import GraphServiceClient``, as ratios;
2. ``syncprep plan desired-state/example.toml`` on the in-process lab for 1,000,
   10,000 and 100,000 users: wall time and peak memory (the lab is created
   beforehand, untimed), and t(100k)/t(10k) (linear is about 10);
3. the Graph provider through the Graph emulator (``benchmarks/graph_observe.py``):
   requests sent against the minimum, wall time and peak memory for 10,000 and
   100,000 users, and 10,000 licence changes under a token-bucket limit: the
   achieved rate as a fraction of the limit (goal at least 0.9), with the changes
   lost or made twice and the Retry-Afters not honoured, as the emulator counts them.

Every figure comes from a child process, so one measurement cannot warm another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "desired-state" / "example.toml"


# A fresh wrapper per run: RUSAGE_CHILDREN's peak then belongs to that one command alone.
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode\n"
    "wall = time.perf_counter() - start\n"
    "print(code, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def timed(command, cwd=None, repeat=1):
    """(median wall seconds, peak RSS MiB) of ``command`` over ``repeat`` runs."""
    walls, peaks = [], []
    for _ in range(repeat):
        result = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *map(str, command)], cwd=cwd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
        )
        code, wall, peak = result.stdout.split()
        if int(code) not in (0, 2):
            raise SystemExit(f"{' '.join(map(str, command))} failed with exit code {code}")
        walls.append(float(wall))
        peaks.append(int(peak) / 1024)
    return statistics.median(walls), max(peaks)


def startup():
    print("1. Start-up (median of 7 runs)")
    syncprep = str(BIN / "syncprep")
    rows = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("import msgraph (bare)", [sys.executable, "-c", "from msgraph import GraphServiceClient"]),
        ("syncprep --help", [syncprep, "--help"]),
        ("syncprep validate example.toml", [syncprep, "validate", str(EXAMPLE)]),
    ]
    times = {name: timed(command, repeat=7)[0] for name, command in rows}
    base, graph = times["python -c pass"], times["import msgraph (bare)"]
    for name, seconds in times.items():
        print(f"   {name:34} {seconds * 1000:7.0f} ms   x{seconds / base:5.1f} of python -c pass   x{seconds / graph:4.2f} of import msgraph")
    return times


def plan_scaling(sizes):
    print(f"2. plan desired-state/example.toml on the lab (wall time and peak memory of the plan command)")
    syncprep = str(BIN / "syncprep")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            lab = Path(tmp) / f"lab-{size}.json"
            subprocess.run([syncprep, "lab", "init", "--users", str(size), "--lab", str(lab)], check=True, capture_output=True)
            seconds, peak = timed([syncprep, "plan", str(EXAMPLE), "--lab", str(lab)], cwd=tmp, repeat=3)
            figures[size] = seconds
            print(f"   {size:>7,} users   {seconds:6.2f} s   peak {peak:7.0f} MiB   lab file {lab.stat().st_size / 2**20:6.1f} MiB")
    if 10_000 in figures and 100_000 in figures:
        print(f"   t(100k)/t(10k) = {figures[100_000] / figures[10_000]:.1f}   (linear is about 10; goal <= 12)")
    return figures


def graph(quick):
    print("3. The Graph provider through the emulator (benchmarks/graph_observe.py)")
    command = [sys.executable, str(ROOT / "benchmarks" / "graph_observe.py")]
    if quick:
        command += ["--users", "5000", "--apply-users", "1000"]
    subprocess.run(command, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 users only")
    parser.add_argument("--skip-graph", action="store_true")
    args = parser.parse_args(argv)
    # Steady state: an editable install under PYTHONDONTWRITEBYTECODE would recompile every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler"), str(ROOT / "providers")], check=True)
    startup()
    plan_scaling([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    if not args.skip_graph:
        graph(args.quick)


if __name__ == "__main__":
    main()
