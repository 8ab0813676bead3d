"""The package layout follows the architecture: small modules, arrows one way, no cycles.

Each part of daskgd is a subpackage; a part may import only the parts below it (and its own
modules). The ranks below are the architecture of README.md's "Architecture" section:
``sklearn -> driver -> (parameter_server client, worker, data) -> (objective, kernels)``, with
``cli`` on top. Imports inside functions count too: a lazy import may not hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import daskgd

PACKAGE = Path(daskgd.__file__).resolve().parent
MAX_LINES = 500

#: rank of each part; a module may import parts of a lower rank, or its own part
RANKS = {
    "daskgd._version": 0,
    "daskgd.errors": 0,
    "daskgd.history": 1,
    "daskgd.cluster": 1,
    "daskgd.allocator": 1,
    "daskgd.objective": 2,
    "daskgd.kernels": 3,
    "daskgd.parameter_server": 4,
    "daskgd.data": 4,
    "daskgd.checkpoint": 4,
    "daskgd.worker": 5,
    "daskgd.driver": 6,
    "daskgd.plot": 6,
    "daskgd.progress": 6,
    "daskgd.sklearn": 7,
    "daskgd.io": 8,
    "daskgd.cli": 9,
    "daskgd": 10,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _part(module: str) -> str:
    """The part (key of RANKS) a module belongs to."""
    best = ""
    for part in RANKS:
        if (module == part or module.startswith(part + ".")) and len(part) > len(best):
            best = part
    return best


def _imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for every daskgd import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("daskgd")]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([target] if target else []))
            if target.startswith("daskgd"):
                names = [a.name for a in node.names]
                # "from daskgd.pkg import module" imports a module, not a name
                subs = [n for n in names if f"{target}.{n}" in MODULES]
                out += [(f"{target}.{n}", [], node.lineno) for n in subs]
                rest = [n for n in names if n not in subs]
                if rest:
                    out.append((target, rest, node.lineno))
    return out


def test_no_module_is_too_long():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_module_belongs_to_a_part():
    assert not [m for m in MODULES if not _part(m)]


def test_imports_point_down_the_architecture():
    wrong = []
    for module, path in MODULES.items():
        mine = _part(module)
        for target, _, line in _imports(path, module):
            theirs = _part(target)
            if theirs == mine or theirs.startswith("daskgd._kernels"):
                continue
            if target.startswith("daskgd._kernels"):
                if mine != "daskgd.kernels":
                    wrong.append(f"{module}:{line} imports the compiled {target}")
                continue
            if RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{module}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_cross_modules():
    wrong = []
    for module, path in MODULES.items():
        for target, names, line in _imports(path, module):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                wrong.append(f"{module}:{line} imports {private} from {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {
        m: {t for t, _, _ in _imports(p, m) if t in MODULES and t != m} for m, p in MODULES.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_scheduler_side_imports_only_parameter_server_and_objective():
    code = (
        "import sys, daskgd.parameter_server as ps; ps.ParameterServer();"
        "print(sorted({m.split('.')[1] for m in sys.modules"
        " if m.startswith('daskgd.') and not m.startswith('daskgd._')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    parts = set(ast.literal_eval(out.stdout.strip()))
    # allocator: the standard library only (the shard servers' freed-memory settings)
    assert parts <= {"parameter_server", "objective", "errors", "history", "allocator"}, parts


def test_parts_and_names_load_on_first_access():
    code = (
        "import daskgd; daskgd.data.DEFAULT_COMPRESSOR; daskgd.kernels.grad_loss;"
        "daskgd.fit; daskgd.SGDRegressor; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
