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
   lost or made twice and the Retry-Afters not honoured, as the emulator counts them;
4. the lab at 100,000 users (issue 19), each figure next to the same one for a
   baseline revision (``--baseline``, by default the commit before issue 19),
   extracted with ``git archive`` and run from the same interpreter: apply of
   Solution 1, plan's peak memory above ``python -c pass`` per user, plan against a
   plain ``json.load`` of the lab file, plan on the default lab against (and in turn with)
   ``python -c pass``, and with ``--suite`` the test suite's wall time. Each ratio
   is printed next to its goal.

Every figure comes from a child process, so one measurement cannot warm another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "desired-state" / "example.toml"
#: The last commit before issue 19's work: what "today's" figures are measured on.
BASELINE = "a09ebef"


# A fresh wrapper per run: RUSAGE_CHILDREN's peak then belongs to that one command alone.
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode\n"
    "wall = time.perf_counter() - start\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(code, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)


def timed(command, cwd=None, repeat=1, env=None, before=None, ok=(0, 2)):
    """(median wall seconds, peak RSS MiB, median CPU seconds: user + system) of ``command``
    over ``repeat`` runs. On a shared, loaded machine the CPU time is the steadier figure.

    ``before`` is called (untimed) before each run, e.g. to put a fresh lab file in place.
    """
    walls, peaks, cpus = [], [], []
    for _ in range(repeat):
        if before is not None:
            before()
        result = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *map(str, command)],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )
        code, wall, peak, cpu = result.stdout.split()
        if int(code) not in ok:
            raise SystemExit(f"{' '.join(map(str, command))} failed with exit code {code}")
        walls.append(float(wall))
        peaks.append(int(peak) / 1024)
        cpus.append(float(cpu))
    return statistics.median(walls), max(peaks), statistics.median(cpus)


def paired(command, other, cwd=None, repeat=11, env=None):
    """(median wall, median CPU) of ``command`` and of ``other``, run in turn ``repeat`` times
    each: on a shared machine the load then weighs on both alike, and their ratio holds still."""
    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(timed(command, cwd=cwd, env=env))
        theirs.append(timed(other, cwd=cwd))
    median = lambda runs, i: statistics.median(run[i] for run in runs)
    return median(ours, 0), median(ours, 2), median(theirs, 0), median(theirs, 2)


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
            seconds, peak, _cpu = timed([syncprep, "plan", str(EXAMPLE), "--lab", str(lab)], cwd=tmp, repeat=3)
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


class Code:
    """One revision of syncprep, run as ``python -m reconciler.cli`` from its own tree."""

    def __init__(self, name, tree):
        self.name, self.tree = name, tree
        # PYTHONPATH comes before the editable install's finder, so the tree's modules win.
        self.env = {"PYTHONPATH": str(tree)}
        # Each revision plans its own example: the desired-state format moved on (a replacement
        # rule's precedence became optional in issue 16, and the baseline refuses today's file).
        self.example = tree / "desired-state" / "example.toml"

    def syncprep(self, *args):
        return [sys.executable, "-m", "reconciler.cli", *map(str, args)]

    def run(self, *args, cwd=None):
        subprocess.run(self.syncprep(*args), check=True, capture_output=True, cwd=cwd, env={**os.environ, **self.env})


def baseline_tree(revision, into):
    """The files of ``revision`` under ``into`` (git archive), compiled like the working tree."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "reconciler"), str(into / "providers")], check=True)
    return into


def lab_at_scale(codes, users, tmp):
    """Issue 19's figures for each code: apply and plan at ``users``, plan on the default lab."""
    print(f"4. The lab at {users:,} users (issue 19): {' against '.join(c.name for c in codes)}")
    _, base_peak, _ = timed([sys.executable, "-c", "pass"], repeat=7)
    figures = {}
    for code in codes:
        work = tmp / code.name
        work.mkdir()
        lab, pristine = work / "lab.json", work / "pristine.json"
        code.run("lab", "init", "--users", users, "--lab", pristine, cwd=work)
        size = pristine.stat().st_size
        fresh = lambda: (shutil.copyfile(pristine, lab), [p.unlink() for p in work.glob("*.journal")])
        # Exit 4: done, but some targeted users end without a licence (user07 has no usage location).
        apply_s, apply_peak, apply_cpu = timed(code.syncprep("apply", code.example, "--auto-approve", "--lab", lab), cwd=work, env=code.env, before=fresh, ok=(0, 4))
        fresh()
        plan_s, plan_peak, plan_cpu = timed(code.syncprep("plan", code.example, "--lab", lab), cwd=work, env=code.env, repeat=3)
        load_s, load_peak, load_cpu = timed([sys.executable, "-c", f"import json; json.load(open({str(lab)!r}, 'rb'))"], repeat=3)
        small = work / "small.json"
        code.run("lab", "init", "--lab", small, cwd=work)
        small_s, small_cpu, pass_s, pass_cpu = paired(code.syncprep("plan", code.example, "--lab", small), [sys.executable, "-c", "pass"], cwd=work, env=code.env, repeat=11)
        figures[code.name] = f = {
            "apply": apply_s,
            "plan": plan_s,
            "per_user": (plan_peak - base_peak) * 2**20 / users,
            "plan/load": plan_s / load_s,
            "small/pass": small_s / pass_s,
            "apply cpu": apply_cpu,
            "plan/load cpu": plan_cpu / load_cpu,
            "small/pass cpu": small_cpu / pass_cpu,
        }
        print(
            f"   {code.name:9} lab file {size / 2**20:5.1f} MiB   apply {apply_s:6.2f} s (peak {apply_peak:4.0f} MiB)   "
            f"plan {plan_s:5.2f} s (peak {plan_peak:4.0f} MiB, {f['per_user']:6.0f} B/user above python -c pass {base_peak:.0f} MiB)   "
            f"json.load {load_s:5.2f} s (peak {load_peak:4.0f} MiB)   plan on the default lab {small_s * 1000:4.0f} ms"
        )
        print(
            f"   {'':9} CPU time (user + system): apply {apply_cpu:6.2f} s   plan {plan_cpu:5.2f} s   json.load {load_cpu:5.2f} s   "
            f"plan on the default lab {small_cpu * 1000:4.0f} ms   python -c pass {pass_cpu * 1000:3.0f} ms (in turn with it)"
        )
    return figures


def suite(codes, tmp):
    """The test suite as the README runs it (``python -m compileall`` + ``pytest``) for each code,
    each in a virtualenv of its own made from this tree's ``requirements-test.lock`` (the same
    package versions; a baseline needs its own for its own ``syncprep`` script): wall time,
    and CPU time (user + system of pytest and of everything it started and waited for). The
    codes run in turn, ``SYNCPREP_SUITE_RUNS`` times (default 1; medians are compared). Then
    the tests that both codes have, by node id: their summed durations (from JUnit XML, as
    ``--durations=0`` sums them) and the wall time of running those alone, as the README runs
    them. A baseline runs without pytest-xdist, as its own config did."""
    import resource
    import xml.etree.ElementTree as ET

    runs = int(os.environ.get("SYNCPREP_SUITE_RUNS", "1"))
    print(f"5. The test suite (python -m compileall + pytest), {runs} run(s) each, in turn")

    def python_for(code):
        if code.tree == ROOT:
            return sys.executable
        venv = tmp / f"{code.name.replace(' ', '-')}-venv"
        if not venv.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements-test.lock")], check=True, capture_output=True)
            subprocess.run([*pip, "--no-deps", "-e", str(code.tree)], check=True, capture_output=True)
        return str(venv / "bin" / "python")

    def run(code, *args, xml=None):
        python, options = python_for(code), ["-p", "no:cacheprovider"]
        if code.tree != ROOT:
            options += ["-p", "no:xdist"]
        if xml:
            options.append(f"--junitxml={xml}")
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([python, "-m", "compileall", "-q", "reconciler", "providers"], cwd=code.tree, check=True)
        result = subprocess.run([python, "-m", "pytest", *options, *args], cwd=code.tree, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        return wall, used, last

    def durations(xml):
        return {f"{c.get('classname')}::{c.get('name')}": float(c.get("time")) for c in ET.parse(xml).getroot().iter("testcase")}

    def node_ids(code):
        # Without the config's addopts (its -q would make -qq: counts per file, not node ids).
        listed = subprocess.run([python_for(code), "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "--collect-only", "-q"], cwd=code.tree, capture_output=True, text=True)
        return {line for line in listed.stdout.splitlines() if "::" in line}

    walls, times, per_test = {}, {}, {}
    for turn in range(runs):
        for code in codes:
            xml = tmp / f"suite-{code.name.replace(' ', '-')}-{turn}.xml"
            wall, used, last = run(code, xml=xml)
            walls.setdefault(code.name, []).append(wall)
            times.setdefault(code.name, []).append(used)
            per_test.setdefault(code.name, []).append(durations(xml))
            print(f"   {code.name:9} {wall:6.1f} s wall {used:6.1f} s CPU   {last}")
    walls = {name: statistics.median(values) for name, values in walls.items()}
    if runs > 1:
        for name in walls:
            print(f"   {name:9} median {walls[name]:6.1f} s wall {statistics.median(times[name]):6.1f} s CPU")
    if len(codes) == 2:
        before, now = codes
        common = sorted(node_ids(before) & node_ids(now))
        keys = set.intersection(*(set(d) for d in per_test[before.name] + per_test[now.name]))
        summed = {code.name: statistics.median(sum(d[k] for k in keys) for d in per_test[code.name]) for code in codes}
        print(f"   tests in both, by node id: {len(common)} ({len(keys)} in both JUnit files); their summed durations {summed[before.name]:.1f} s -> {summed[now.name]:.1f} s "
              f"({summed[now.name] / summed[before.name]:.2f}; under pytest-xdist the durations overlap and each is slowed by the other worker)")
        # Those tests alone: in one process each (like for like: the same tests, the same way), and
        # this tree as the README runs a suite (a worker per core; named tests alone would get none).
        ways = [(before, "baseline", []), (now, "now, one process", ["-n", "0"]), (now, "now, a worker per core", ["-n", str(len(os.sched_getaffinity(0)))])]
        alone = {}
        for turn in range(runs):
            for code, label, workers in ways:
                xml = tmp / f"alone-{label.replace(' ', '-').replace(',', '')}-{turn}.xml"
                wall, used, last = run(code, *workers, *common, xml=xml)
                summed = sum(durations(xml).values())
                alone.setdefault(label, []).append((wall, used, summed))
                print(f"   those {len(common)} alone, {label:23} {wall:6.1f} s wall {used:6.1f} s CPU {summed:6.1f} s summed durations   {last}")
        median = {label: [statistics.median(v[i] for v in values) for i in range(3)] for label, values in alone.items()}
        base = median["baseline"]
        for label in ("now, one process", "now, a worker per core"):
            wall, used, summed = (now_ / then for now_, then in zip(median[label], base))
            print(f"   those tests alone, {label} / baseline: wall {wall:.2f}, CPU {used:.2f}, summed durations {summed:.2f}   goal <= 0.7 (wall)  {'met' if wall <= 0.7 else 'NOT MET'}")
    return walls


def goals(figures, walls, users):
    before, now = figures.get("baseline"), figures["this tree"]
    at = f"at {users:,} users"
    print("Issue 19's goals (ratios from this one run)")
    rows = []
    if before:
        rows.append((f"apply of Solution 1 {at}, now / baseline", now["apply"] / before["apply"], 0.3, f"{before['apply']:.1f} s -> {now['apply']:.1f} s"))
        rows.append((f"  the same in CPU time", now["apply cpu"] / before["apply cpu"], 0.3, f"{before['apply cpu']:.1f} s -> {now['apply cpu']:.1f} s"))
    rows += [
        (f"plan {at}: KB a user above the interpreter", now["per_user"] / 1000, 2.0, f"baseline {before['per_user'] / 1000:.1f}" if before else ""),
        (f"plan {at} / json.load of the lab file", now["plan/load"], 3.0, f"baseline {before['plan/load']:.1f}" if before else ""),
        ("  the same in CPU time", now["plan/load cpu"], 3.0, f"baseline {before['plan/load cpu']:.1f}" if before else ""),
        ("plan on the default lab / python -c pass", now["small/pass"], 8.0, f"baseline {before['small/pass']:.1f}" if before else ""),
        ("  the same in CPU time", now["small/pass cpu"], 8.0, f"baseline {before['small/pass cpu']:.1f}" if before else ""),
    ]
    if walls and "baseline" in walls:
        rows.append(("test suite wall time, now / baseline", walls["this tree"] / walls["baseline"], 0.7, f"{walls['baseline']:.0f} s -> {walls['this tree']:.0f} s"))
    for name, ratio, goal, note in rows:
        print(f"   {name:56} {ratio:6.2f}   goal <= {goal:<4}  {'met' if ratio <= goal else 'NOT MET':7}  {note}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 users only")
    parser.add_argument("--skip-graph", action="store_true")
    parser.add_argument("--only-lab", action="store_true", help="only part 4 (and 5 with --suite)")
    parser.add_argument("--baseline", default=BASELINE, help=f"the revision to compare with (default {BASELINE}); 'none' for no baseline")
    parser.add_argument("--suite", action="store_true", help="also time the test suite, here and at the baseline (about 5 minutes)")
    parser.add_argument("--lab-users", type=int, default=100_000)
    args = parser.parse_args(argv)
    # Steady state: an editable install under PYTHONDONTWRITEBYTECODE would recompile every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler"), str(ROOT / "providers")], check=True)
    if not args.only_lab:
        startup()
        plan_scaling([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
        if not args.skip_graph:
            graph(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        codes = [Code("this tree", ROOT)]
        if args.baseline != "none":
            codes.insert(0, Code("baseline", baseline_tree(args.baseline, tmp / "baseline-tree")))
        users = 10_000 if args.quick else args.lab_users
        figures = lab_at_scale(codes, users, tmp)
        walls = suite(codes, tmp) if args.suite else {}
        goals(figures, walls, users)


if __name__ == "__main__":
    main()
