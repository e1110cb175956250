"""A plan's field-level diff: deepdiff's answer, without importing deepdiff for plain views (issue 19)."""

import random
import subprocess
import sys

import pytest

from conftest import ROOT
from reconciler.steps import _deepdiff_changes, field_changes

def deepdiff_answer(before, after):
    """What field_changes answered when it always asked deepdiff."""
    if before is None or after is None or before == after:
        return ()
    return _deepdiff_changes(before, after)


SCALARS = [None, True, False, 0, 1, 7, "", "a", "Direct from mail (Update)", "NULL"]
KEYS = ["name", "precedence", "enabled", "flows", "msExchMailboxGuid", "scope", "x"]


def tree(rng, depth=0):
    roll = rng.random()
    if depth < 3 and roll < 0.35:
        return {rng.choice(KEYS): tree(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 3 and roll < 0.45:
        return [tree(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(SCALARS)


def mutate(rng, value, depth=0):
    if isinstance(value, dict) and value and rng.random() < 0.8:
        value = dict(value)
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.2:
            del value[key]
        elif roll < 0.4:
            value[rng.choice(KEYS)] = tree(rng, depth + 1)
        else:
            value[key] = mutate(rng, value[key], depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        value = list(value)
        index = rng.randrange(len(value))
        if rng.random() < 0.3:
            value.insert(index, tree(rng, depth + 1))
        else:
            value[index] = mutate(rng, value[index], depth + 1)
        return value
    return tree(rng, depth)


@pytest.mark.parametrize("seed", range(5))
def test_the_plain_diff_gives_deepdiffs_answer(seed):
    rng = random.Random(seed)
    compared = 0
    for _ in range(400):
        before = {k: tree(rng, 1) for k in rng.sample(KEYS, rng.randint(1, 5))}
        after = mutate(rng, before)
        for _ in range(rng.randint(0, 2)):
            after = mutate(rng, after)
        if before == after or after is None:
            continue
        assert field_changes(before, after) == deepdiff_answer(before, after), (before, after)
        compared += 1
    assert compared > 300


@pytest.mark.parametrize(
    "before, after",
    [
        ({"a": 1, "b": 1}, {"a": True, "b": 2}),  # 1 == True in Python, a type change to deepdiff
        ({"a": [1, 2], "b": 1}, {"a": [1, True], "b": 2}),
        ({"a": None}, {"a": {"b": 1}}),
        ({"a": {"b": 1}}, {"a": {"b": 1}, "c": [1]}),
        ({"a": ["x", "y"]}, {"a": ["x", "z", "y"]}),  # a list that changed: deepdiff's own alignment
        ({"it's": 1}, {"it's": 2}),  # a key deepdiff quotes differently
        ({"a.b": 1, "a": {"b": 1}}, {"a.b": 2, "a": {"b": 2}}),
        ({"5": 1}, {"5": 2}),
        ({"f": 1.5}, {"f": 2.5}),
        ({"t": (1, 2)}, {"t": (1, 3)}),
        ({"a": 1}, ["a"]),
    ],
)
def test_edge_cases_give_deepdiffs_answer(before, after):
    assert field_changes(before, after) == deepdiff_answer(before, after)


def test_a_solution_1_plan_does_not_import_deepdiff():
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from conftest import EXAMPLE, plan_for\n"
        "from providers.lab import scenario\n"
        "from providers.lab.provider import LabTarget\n"
        "plan = plan_for(EXAMPLE, LabTarget(scenario.build('default', users=20)))\n"
        "assert any(step.changes for step in plan.steps)\n"
        "print('deepdiff' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "deepdiff (about 75 ms) was imported for a plan of plain views"
