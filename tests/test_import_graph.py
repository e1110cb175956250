"""No import circle in the core, its command-line package or the providers, counting function-level
imports. ``from reconciler.cli import targetstate`` depends on the package as well as on the module
(it runs ``reconciler/cli/__init__`` first): a package whose ``__init__`` imports its own verbs, which
import their siblings through it, is a circle."""

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_of(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph(packages=("reconciler", "providers"), root=ROOT):
    modules = {_module_of(p, root): p for package in packages for p in (root / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, name, path.name == "__init__.py")
                deps |= {module} & modules.keys()
                deps |= {f"{module}.{a.name}" for a in node.names} & modules.keys()
        deps.discard(name)
        graph[name] = deps
    return graph


def _absolute(node, name, is_package):
    """The module an ``import from`` names: ``from . import x`` and ``from .x import y`` are
    relative to the importing module's package (a package's ``__init__`` is its own package)."""
    if node.level == 0:
        return node.module
    package = name.split(".") if is_package else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


#: Circles known and left, each with why (none now: the lab's PowerShell base types, which the file
#: cmdlets and the interpreter share, live in providers.lab.pwsh_objects).
KNOWN = set()


def test_no_import_circle_in_the_core_the_command_line_or_the_providers():
    graph = _graph()
    for module, dependency in KNOWN:
        assert dependency in graph[module], f"{module} no longer imports {dependency}: take it out of KNOWN"
        graph[module].discard(dependency)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_the_graph_sees_a_package_that_imports_its_own_verbs():
    """The check can fail: a package importing a submodule that imports a sibling through it."""
    graph = {"pkg": {"pkg.verb"}, "pkg.verb": {"pkg", "pkg.shared"}, "pkg.shared": {"pkg"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()
    assert "reconciler.cli" in _graph()["reconciler.cli.plan"]


@pytest.mark.parametrize(
    "files",
    [
        {"pkg/__init__.py": "from . import verb\n", "pkg/verb.py": "from .shared import x\n", "pkg/shared.py": "from pkg import verb\n"},
        {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from .sub.b import g\n", "pkg/sub/__init__.py": "", "pkg/sub/b.py": "from ..a import f\n"},
        {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "from .a import f\n"},
    ],
    ids=["package-imports-its-verb", "two-levels-up", "siblings"],
)
def test_a_circle_through_relative_imports_is_seen(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(_graph(("pkg",), root=tmp_path)).prepare()


def test_relative_imports_resolve_to_the_modules_they_name(tmp_path):
    files = {"pkg/__init__.py": "from . import a\n", "pkg/a.py": "from .sub import b\nfrom . import c\n", "pkg/c.py": "", "pkg/sub/__init__.py": "from .b import x\nfrom .. import c\n", "pkg/sub/b.py": "from ..c import y\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _graph(("pkg",), root=tmp_path) == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub", "pkg.sub.b", "pkg.c", "pkg"},
        "pkg.c": set(),
        "pkg.sub": {"pkg.sub.b", "pkg.c", "pkg"},
        "pkg.sub.b": {"pkg.c"},
    }
