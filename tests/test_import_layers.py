"""Lower layers never import higher ones, and nothing imports round a loop.

The allowed directions are the table in ``tests/import_layers.txt``. Every import in
``ecgbridge/`` counts: at module level, inside functions, under ``TYPE_CHECKING``, and
``"ecgbridge.x:function"`` strings (lazy registries), so no dependency hides from the test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ecgbridge"
TABLE = Path(__file__).with_name("import_layers.txt")
_LAZY_REFERENCE = re.compile(r"(ecgbridge(?:\.\w+)+):\w+")


def module_name(path: Path, root: Path = ROOT) -> str:
    """Dotted name of a source file below `root`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_layers(table: Path = TABLE) -> dict[str, int]:
    """Unit name (module or package) -> rank, from the table."""
    ranks: dict[str, int] = {}
    for line in table.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rank, *names = line.split()
            for name in names:
                ranks[name] = int(rank)
    return ranks


def _targets(node: ast.AST, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        submodules = [f"{node.module}.{a.name}" for a in node.names
                      if f"{node.module}.{a.name}" in modules]
        return submodules if len(submodules) == len(node.names) else [node.module, *submodules]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        match = _LAZY_REFERENCE.fullmatch(node.value)
        return [match.group(1)] if match else []
    return []


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the ecgbridge modules it imports (every kind of import, see above)."""
    files = {module_name(p, package.parent): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, modules):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("ecgbridge") and target != name:
                    graph[name].add(target)
    return graph


def unit_of(module: str, ranks: dict[str, int]) -> str:
    """The longest name of the table that covers `module`."""
    candidates = [u for u in ranks if module == u or module.startswith(u + ".")]
    if not candidates:
        raise AssertionError(f"{module} is in no row of {TABLE.name}: add it to the table")
    return max(candidates, key=len)


def upward_imports(graph: dict[str, set[str]], ranks: dict[str, int]) -> list[str]:
    """``a -> b`` lines for every import of a higher row than the importer's."""
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            su, tu = unit_of(source, ranks), unit_of(target, ranks)
            if ranks[tu] > ranks[su]:
                bad.append(f"{source} ({su}, row {ranks[su]}) imports {target} "
                           f"({tu}, row {ranks[tu]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_graph(graph: dict[str, set[str]], ranks: dict[str, int]) -> dict[str, set[str]]:
    """The import graph between the units of the table."""
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        su = unit_of(source, ranks)
        units.setdefault(su, set())
        for target in targets:
            tu = unit_of(target, ranks)
            if tu != su:
                units[su].add(tu)
    return units


def test_no_module_imports_a_higher_layer() -> None:
    bad = upward_imports(import_graph(), read_layers())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles_between_modules_or_units() -> None:
    graph = import_graph()
    assert cycles(graph) == [], cycles(graph)
    units = unit_graph(graph, read_layers())
    assert cycles(units) == [], cycles(units)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """A lazy import of a higher layer, and a loop, are both reported."""
    pkg = tmp_path / "ecgbridge"
    (pkg / "jobs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "jobs" / "runner.py").write_text(
        "def f():\n    from ecgbridge.service.metrics import Metrics\n    return Metrics\n"
    )
    (pkg / "service").mkdir()
    (pkg / "service" / "__init__.py").write_text("")
    (pkg / "service" / "metrics.py").write_text("WRITER = 'ecgbridge.jobs.runner:f'\n")
    graph = import_graph(pkg)
    ranks = {"ecgbridge": 3, "ecgbridge.jobs": 1, "ecgbridge.service": 2}
    assert graph["ecgbridge.jobs.runner"] == {"ecgbridge.service.metrics"}
    assert len(upward_imports(graph, ranks)) == 1
    assert cycles(graph) == [["ecgbridge.jobs.runner", "ecgbridge.service.metrics"]]


def test_inputs_become_ecgs_in_one_place() -> None:
    """Only ``ecgbridge.api.digitize_input`` loads an input and runs the digitizer on it:
    the API, the CLI, the batch mode and the daemon's worker all call it."""
    users = sorted(
        name for name, targets in import_graph().items()
        if "ecgbridge.digitizer.pipeline" in targets and not name.startswith("ecgbridge.digitizer")
    )
    assert users == ["ecgbridge.api"]


def test_the_runtime_does_not_load_the_test_renderer() -> None:
    """What the issue's acceptance runs: importing and using ecgbridge loads no test code."""
    import subprocess
    import sys

    code = ("import ecgbridge, sys; ecgbridge.digitize; import ecgbridge.cli; "
            "ecgbridge.cli.build_parser(); "
            "print([m for m in sys.modules if 'synth' in m or 'testing' in m])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
