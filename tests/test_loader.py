"""Desired-state loading: every example loads; every mistake is one line with file, line and key path."""

from pathlib import Path

import pytest

from reconciler.desired import RuleKind
from reconciler.errors import ConfigError
from reconciler.loader import key_lines, load_desired, loads_desired
from reconciler.model import FlowType
from mutate import mutations, replaced

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "desired-state").glob("*.toml"))
INVALID = Path(__file__).parent / "fixtures" / "invalid"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_desired_state_file_is_valid(path):
    desired = load_desired(path)
    assert desired.rules or desired.licenses


def test_example_is_the_articles_solution_1():
    desired = load_desired(ROOT / "desired-state" / "example.toml")
    user_rule = next(r for r in desired.rules if r.name == "In from AD - User Exchange")
    # No precedence: each AD connector's copy takes back its original's (108 on the default lab).
    assert user_rule.kind is RuleKind.REPLACEMENT and user_rule.precedence is None and user_rule.connector is None
    (flow,) = user_rule.flows
    assert (flow.flow_type, flow.expression, flow.apply_once, flow.merge_type.value) == (FlowType.EXPRESSION, "NULL", True, "Update")


def errors(text):
    with pytest.raises(ConfigError) as caught:
        loads_desired(text, "x.toml")
    return list(caught.value.problems)


def test_all_errors_come_at_once_each_on_one_line_with_file_line_and_key_path():
    text = (
        "[scheduler]\n"  # 1
        'sync_cycle_enabled = "yes"\n'  # 2
        "[[rules]]\n"  # 3
        'name = "A"\n'  # 4
        'kind = "custom"\n'  # 5
        'precedence = "90"\n'  # 6
        "nummber = 3\n"  # 7
        "  [[rules.flows]]\n"  # 8
        '  destination = "msExchMailboxGuid"\n'  # 9
        '  flow_type = "Expresion"\n'  # 10
    )
    problems = errors(text)
    assert problems == [
        "x.toml:2: scheduler.sync_cycle_enabled: expected true or false, got a string",
        "x.toml:6: rules[0].precedence: expected an integer, got a string",
        "x.toml:7: rules[0].nummber: unknown key",
        "x.toml:10: rules[0].flows[0].flow_type: must be one of Direct, Constant, Expression (got 'Expresion')",
    ]


CASES = {
    "duplicate-rule-name": ("rules[1].name", "duplicate rule name"),
    "precedence-taken-twice": ("rules[1].precedence", "taken twice"),
    "precedence-out-of-range": ("rules[0].precedence", "out of range"),
    "malformed-upn": ("licenses[0].users[1]", "not a valid user principal name"),
    "malformed-ou": ("licenses[0].ous[0]", "not a distinguished name"),
    "stock-rule-with-flows": ("rules[0].flows", "stock rule can only be enabled or disabled"),
    "secret-in-file": ("target.graph.client_secret", "secrets do not belong"),
    "direct-flow-without-source": ("rules[0].flows[0]", "needs a source attribute"),
    "remote-without-graph": ("target", "needs [target.graph]"),
    "invalid-toml": (None, "invalid TOML"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_invalid_fixture_names_its_problem(name):
    path = INVALID / f"{name}.toml"
    key_path, message = CASES[name]
    with pytest.raises(ConfigError) as caught:
        load_desired(path)
    problems = caught.value.problems
    assert any(message in p for p in problems), problems
    for problem in problems:
        assert "\n" not in problem and "Traceback" not in problem
        assert problem.startswith(f"{path}:")
    if key_path:
        assert any(f": {key_path}: " in p for p in problems), problems


def test_the_line_is_the_line_of_the_offending_key():
    path = INVALID / "precedence-taken-twice.toml"
    lines = path.read_text().splitlines()
    with pytest.raises(ConfigError) as caught:
        load_desired(path)
    (problem,) = caught.value.problems
    line = int(problem.split(":")[1])
    assert lines[line - 1].strip().startswith("precedence")
    assert line > 5, "the second rule's precedence, not the first"


def test_a_secret_is_never_echoed():
    problems = errors('[target]\nkind = "remote"\n[target.graph]\nclient_secret = "s3cr3t-value"\n[target.entra_connect]\nhost = "x"\n')
    assert not any("s3cr3t-value" in p for p in problems)


def test_oversized_and_non_utf8_files_are_refused_in_one_line(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\n")
    with pytest.raises(ConfigError, match="over the 1048576-byte limit"):
        load_desired(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[[licenses]]\nsku = "E3"\nusers = ["j\xe9r\xf4me@contoso.com"]\n')
    with pytest.raises(ConfigError, match=r"latin.toml:3: not UTF-8"):
        load_desired(latin)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_desired(tmp_path / "nope.toml")


def test_key_lines_follow_arrays_of_tables_and_dotted_keys():
    text = (
        "[[rules]]\n"
        'name = "a"\n'
        "  [[rules.flows]]\n"
        '  destination = "x"\n'
        "  [[rules.flows]]\n"
        '  destination = "y"\n'
        "[[rules]]\n"
        'name = "b"\n'
        "  [[rules.flows]]\n"
        '  destination = "z"\n'
        "[target]\n"
        'graph.endpoint = "http://127.0.0.1"\n'
        'note = """\n[[not]] a header\n"""\n'
        "users = [\n  'a',\n  'b',\n]\n"
        "after = 1\n"
    )
    lines = key_lines(text)
    assert lines["rules[0].flows[1].destination"] == 6
    assert lines["rules[1].flows[0].destination"] == 10
    assert lines["target.graph.endpoint"] == 12
    assert "not" not in lines
    assert lines["target.after"] == 20


def test_cross_field_problems_come_with_type_errors_in_one_run():
    text = (
        "[scheduler]\n"
        "sync_cycle_enabled = 1\n"  # 2: a type error
        '[[rules]]\nname = "A"\nkind = "stock"\n'
        '[[rules]]\nname = "A"\nkind = "stock"\n'  # 7: duplicate name
        '[[licenses]]\nsku = "E3"\nusers = ["bad"]\n'  # 11: malformed UPN
    )
    problems = errors(text)
    assert [p.split(": ", 1)[0] for p in problems] == ["x.toml:2", "x.toml:7", "x.toml:11"]
    assert "duplicate rule name" in problems[1] and "not a valid user principal name" in problems[2]


def test_a_file_notepad_saved_with_a_utf8_bom_is_accepted_with_its_lines(tmp_path):
    """Notepad's "UTF-8 with BOM": the same desired state, and errors still on the right line."""
    example = Path("desired-state/example.toml").read_bytes()
    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes(b"\xef\xbb\xbf" + example.replace(b"\n", b"\r\n"))
    assert load_desired(with_bom) == load_desired("desired-state/example.toml")
    broken = tmp_path / "broken.toml"
    broken.write_bytes(b"\xef\xbb\xbf[scheduler]\r\nsync_cycle_enabled = \"yes\"\r\n")
    with pytest.raises(ConfigError) as caught:
        load_desired(broken)
    assert caught.value.problems[0].startswith(f"{broken}:2: scheduler.sync_cycle_enabled")


def test_a_utf16_file_is_refused_in_one_line_saying_what_to_do(tmp_path):
    utf16 = tmp_path / "ps51.toml"
    utf16.write_bytes("[scheduler]\nsync_cycle_enabled = true\n".encode("utf-16"))
    with pytest.raises(ConfigError) as caught:
        load_desired(utf16)
    (problem,) = caught.value.problems
    assert problem == f"{utf16}:1: UTF-16, not UTF-8 (as Windows PowerShell 5.1 writes with '>'); save it as UTF-8"


# The quick road (reconciler.structure, issue 19) against the strict cattrs converter.


def _both(raw):
    """(the quick road's value or its exception, the converter's value or its exception)."""
    from reconciler.desired import DesiredState
    from reconciler.loader import _converter
    from reconciler.structure import structure

    results = []
    for road in (structure, _converter().structure):
        try:
            results.append(road(raw, DesiredState))
        except Exception as exc:  # noqa: BLE001 - compared below
            results.append(exc)
    return results


def _examples_raw():
    import tomli

    return [(path.name, tomli.loads(path.read_text(encoding="utf-8"))) for path in EXAMPLES]


@pytest.mark.parametrize("name, raw", _examples_raw(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_quick_road_builds_what_the_converter_builds(name, raw):
    quick, strict = _both(raw)
    assert not isinstance(strict, Exception), strict
    assert repr(quick) == repr(strict)  # repr: every field, those compared or not


OTHERS = ["text", 7, 2.5, True, [], {}, ["x"], [{}]]  # another type


@pytest.mark.parametrize("name, raw", _examples_raw(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_quick_road_refuses_whatever_the_converter_refuses(name, raw):
    checked = 0
    for path, new in mutations(raw, OTHERS):
        quick, strict = _both(replaced(raw, path, new))
        if isinstance(strict, Exception):
            assert isinstance(quick, Exception), (path, new, quick)
        elif not isinstance(quick, Exception):
            assert repr(quick) == repr(strict), (path, new)
        checked += 1
    assert checked > 100
