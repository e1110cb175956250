"""The GitHub Actions workflows in docs/ci: their structure, and every syncprep command in them
parsed by the real command-line parser (so a renamed flag breaks this test, not a team's CI)."""

import re
import shlex

import pytest

from conftest import ROOT
from reconciler.cli import _parser
from reconciler.markdown import MARKER

CI = ROOT / "docs" / "ci"
WORKFLOWS = ("plan.yml", "apply.yml", "drift.yml")
SECRETS = {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "SYNCPREP_WINRM_USERNAME", "SYNCPREP_WINRM_PASSWORD"}


# ---------------------------------------------------------------------------- a small YAML reader
# PyYAML is not a dependency. The workflows use a small subset of YAML (block mappings and
# sequences, literal blocks, quoted and plain scalars, [a, b] and {}), which this reads strictly:
# anything else is an error, so the test cannot pass on a file it does not understand.


class YamlSubsetError(ValueError):
    pass


def _strip_comment(text):
    quote = None
    for index, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (index == 0 or text[index - 1] == " "):
            return text[:index].rstrip()
    return text.rstrip()


def _scalar(text):
    text = _strip_comment(text).strip()
    if not text:
        return None
    if text[0] in "\"'":
        if text[-1] != text[0] or len(text) < 2:
            raise YamlSubsetError(f"unterminated string: {text}")
        body = text[1:-1]
        return body.replace('\\"', '"').replace("\\\\", "\\") if text[0] == '"' else body.replace("''", "'")
    if text == "{}":
        return {}
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlSubsetError(f"unterminated flow sequence: {text}")
        inner = text[1:-1].strip()
        return [_scalar(item) for item in inner.split(",")] if inner else []
    if text.startswith(("{", "&", "*", "!", "%", "@", "`")):
        raise YamlSubsetError(f"not in the subset: {text}")
    return {"true": True, "false": False}.get(text, text)


def load_yaml(text):
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"line {number}: tab in indentation")
        lines.append((number, raw))
    value, index = _block(lines, _next(lines, 0), None)
    if _next(lines, index) < len(lines):
        raise YamlSubsetError(f"line {lines[_next(lines, index)][0]}: unexpected indentation")
    return value


def _indent(raw):
    return len(raw) - len(raw.lstrip(" "))


def _next(lines, index):
    while index < len(lines) and (not lines[index][1].strip() or lines[index][1].strip().startswith("#")):
        index += 1
    return index


def _block(lines, index, indent):
    if index >= len(lines):
        return None, index
    indent = _indent(lines[index][1]) if indent is None else indent
    if lines[index][1].strip().startswith("- ") or lines[index][1].strip() == "-":
        return _sequence(lines, index, indent)
    return _mapping(lines, index, indent)


def _sequence(lines, index, indent):
    items = []
    while index < len(lines):
        index = _next(lines, index)
        if index >= len(lines) or _indent(lines[index][1]) != indent or not lines[index][1].strip().startswith("-"):
            break
        number, raw = lines[index]
        rest = raw[indent + 1 :]
        if re.match(r"^\s+[^\s\"'][^:]*:(\s|$)", rest):
            # "- key: value": a mapping whose first line is this one, its others indented to the key.
            lines = lines[:index] + [(number, " " * (indent + 2) + rest.lstrip())] + lines[index + 1 :]
            value, index = _mapping(lines, index, indent + 2)
            items.append(value)
        else:
            items.append(_scalar(rest))
            index += 1
    return items, index


def _mapping(lines, index, indent):
    mapping = {}
    while index < len(lines):
        index = _next(lines, index)
        if index >= len(lines) or _indent(lines[index][1]) < indent:
            break
        number, raw = lines[index]
        if _indent(raw) > indent:
            raise YamlSubsetError(f"line {number}: unexpected indentation")
        match = re.match(r"^([^\s\"'#][^:]*|\"[^\"]*\"):(?:\s+(.*))?$", raw.strip())
        if not match:
            raise YamlSubsetError(f"line {number}: not a key: {raw.strip()}")
        key, rest = match.group(1).strip('"'), (match.group(2) or "")
        if key in mapping:
            raise YamlSubsetError(f"line {number}: duplicate key {key}")
        index += 1
        if _strip_comment(rest) in ("|", "|-", ">", ">-"):
            body = []
            while index < len(lines) and (not lines[index][1].strip() or _indent(lines[index][1]) > indent):
                body.append(lines[index][1])
                index += 1
            while body and not body[-1].strip():
                body.pop()
            cut = min((_indent(b) for b in body if b.strip()), default=0)
            mapping[key] = "\n".join(b[cut:] for b in body) + "\n"
        elif _strip_comment(rest):
            mapping[key] = _scalar(rest)
        else:
            following = _next(lines, index)
            if following < len(lines) and (
                _indent(lines[following][1]) > indent
                or (_indent(lines[following][1]) == indent and lines[following][1].strip().startswith("- "))
            ):
                mapping[key], index = _block(lines, following, _indent(lines[following][1]))
            else:
                mapping[key] = None
    return mapping, index


def test_the_yaml_reader_reads_what_it_claims():
    doc = load_yaml('a: 1  # c\nb:\n  - x\n  - k: "v # not a comment"\n    j: [p, q]\nc: |\n  one\n    two\nd: {}\ne:\n- y\n')
    assert doc == {"a": "1", "b": ["x", {"k": "v # not a comment", "j": ["p", "q"]}], "c": "one\n  two\n", "d": {}, "e": ["y"]}
    for bad in ("a: 1\na: 2\n", "a:\n\tb: 1\n", "a: &anchor 1\n", "a: 1\n   b: 2\n"):
        with pytest.raises(YamlSubsetError):
            load_yaml(bad)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_yaml_reader_agrees_with_pyyaml_where_it_is_installed(name):
    yaml = pytest.importorskip("yaml")
    text = (CI / name).read_text()
    theirs = yaml.safe_load(text)
    theirs["on"] = theirs.pop(True, theirs.get("on"))  # YAML 1.1 reads the key on as true
    assert load_yaml(text) == _stringify(theirs)


def _stringify(value):
    # The subset reader keeps plain scalars as strings (but true/false); PyYAML types them.
    if isinstance(value, dict):
        return {str(k): _stringify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    return str(value)


# ---------------------------------------------------------------------------- the workflows


def workflow(name):
    return load_yaml((CI / name).read_text())


def steps(doc):
    (job,) = doc["jobs"].values()
    return job["steps"]


def run_blocks(doc):
    return [s["run"] for s in steps(doc) if "run" in s]


_COMMAND = re.compile(r"(?:^|[;&|]\s*|\bthen\s+|\belse\s+)(?:\.venv/bin/)?syncprep\s+(.*)$")


def syncprep_commands(script):
    """Every syncprep invocation in a shell script, as argv, with variables filled in."""
    script = re.sub(r"\\\n\s*", " ", script)
    arrays = {}
    for name, items in re.findall(r"(\w+)\+=\(([^)]*)\)", script):
        arrays.setdefault(name, []).extend(shlex.split(items))
    commands = []
    for line in script.splitlines():
        match = _COMMAND.search(line.strip())
        if not match:
            continue
        # The command ends at a redirection, a pipe or a list operator.
        text = re.split(r"\s(?:\d?>>?|\||;|&&|\|\|)\s?", " " + match.group(1))[0]
        argv = []
        for token in shlex.split(text):
            array = re.fullmatch(r"\$\{(\w+)\[@\]\}", token)
            if array:
                argv += arrays[array.group(1)]
            elif token.startswith("$"):
                argv.append("desired-state/example.toml")
            else:
                argv.append(token)
        commands.append(argv)
    return commands


def all_commands(name):
    return [argv for block in run_blocks(workflow(name)) for argv in syncprep_commands(block)]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_syncprep_command_is_one_the_cli_knows(name, capsys):
    commands = all_commands(name)
    assert commands, f"{name} runs no syncprep command"
    for argv in commands:
        try:
            _parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: syncprep {' '.join(argv)}: {capsys.readouterr().err.strip()}")


def test_the_commands_are_the_documented_ones():
    plan = all_commands("plan.yml")
    assert ["plan", "desired-state/example.toml", "-out", "plan.json", "--detailed-exitcode"] in plan
    assert ["show", "plan.json", "--markdown"] in plan and ["show", "plan.json", "--markdown", "--mask-users"] in plan
    apply = all_commands("apply.yml")
    assert ["apply", "plan.json", "--desired", "desired-state/example.toml", "--auto-approve", "--approve-irreversible", "--approve-threshold-raise", "--force"] in apply
    assert all_commands("drift.yml") == [["drift", "desired-state/example.toml", "--markdown"]]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_secrets_only_as_environment_variables_never_echoed(name):
    text = (CI / name).read_text()
    doc = workflow(name)
    for line in text.splitlines():
        if re.search(r"\$\{\{[^}]*secrets\.", line):
            match = re.fullmatch(r"\s+(\w+): \$\{\{ secrets\.(\w+) \}\}", line)
            assert match and match.group(1) == match.group(2) and match.group(1) in SECRETS, line
    for step in steps(doc):
        env = step.get("env") or {}
        if any("secrets." in str(v) for v in env.values()):
            assert "run" in step and "syncprep" in step["run"], step.get("name")
        for block in (step.get("run", ""), (step.get("with") or {}).get("script", "")):
            assert "secrets." not in block
            assert not any(secret in block for secret in SECRETS), step.get("name")
    assert "set -x" not in text


def test_plan_posts_one_comment_found_by_the_marker():
    doc = workflow("plan.yml")
    assert doc["on"]["pull_request"]["paths"] == ["desired-state/**"]
    assert doc["permissions"]["pull-requests"] == "write"
    uses = [s.get("uses", "") for s in steps(doc)]
    assert any(u.startswith("actions/github-script@") for u in uses)
    upload = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "plan.json" and upload["with"]["name"] == "syncprep-plan"
    script = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/github-script@"))["with"]["script"]
    assert f'"{MARKER}"' in script and "updateComment" in script and "createComment" in script
    # The failure note keeps the marker, so it replaces the old plan instead of adding a comment.
    failure = next(s for s in steps(doc) if "failed" in s.get("name", ""))
    assert MARKER in failure["run"]
    plan_step = next(s for s in steps(doc) if s.get("id") == "plan")
    assert '-ne 0 ] && [ "$code" -ne 2 ]' in plan_step["run"]


def test_apply_is_protected_and_irreversible_needs_a_dispatch_input():
    doc = workflow("apply.yml")
    (job,) = doc["jobs"].values()
    assert job["environment"] == "syncprep-production"
    assert doc["on"]["push"]["branches"] == ["main"]
    assert doc["on"]["workflow_dispatch"]["inputs"]["approve_irreversible"]["default"] is False
    assert doc["concurrency"]["cancel-in-progress"] is False
    download = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["name"] == "syncprep-plan" and download["with"]["run-id"] == "${{ steps.find.outputs.run_id }}"
    apply_step = next(s for s in steps(doc) if s.get("name") == "Apply")
    assert apply_step["env"]["APPROVE_IRREVERSIBLE"] == "${{ github.event_name == 'workflow_dispatch' && inputs.approve_irreversible }}"
    for line in apply_step["run"].splitlines():
        if "--approve-irreversible" in line:
            assert line.startswith('if [ "$APPROVE_IRREVERSIBLE" = "true" ]')
    # The plan run is the one for the workflow file the README says to copy plan.yml to.
    find = next(s for s in steps(doc) if s.get("id") == "find")
    assert 'workflow_id: "syncprep-plan.yml"' in find["with"]["script"]
    assert "`syncprep-plan.yml`" in (CI / "README.md").read_text()


def test_drift_runs_nightly_and_tells_the_exit_codes_apart():
    doc = workflow("drift.yml")
    assert doc["on"]["schedule"][0]["cron"]
    script = next(s for s in steps(doc) if s.get("id") == "drift")["run"]
    assert "0|2) ;;" in script and "3) echo \"::warning" in script and '*) exit "$code"' in script
    issue = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/github-script@"))
    assert issue["if"] == "steps.drift.outputs.code == '2' || steps.drift.outputs.code == '0'"
    assert "issues.create(" in issue["with"]["script"] and "issues.update(" in issue["with"]["script"]
