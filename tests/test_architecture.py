"""The package's layers, checked on its import graph (STYLE.md section 2).

``cli -> plotting, models, datasets``; ``models -> solvers -> kernels -> linalg
-> leaf helpers``: nothing imports upward, module-level imports form no cycle,
and no module imports another module's private name.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kronecker_gp"
LEAVES = {
    "_typing",
    "_validation",
    "_grid",
    "_budgets",
    "_threads",
    "_version",
    "_array_api",  # array-namespace glue (numpy; array_api_compat when installed)
}
#: Layer of each top-level part of the package; a module may import only its own
#: layer or lower ones.
LAYERS = {
    "leaf": 0,
    "linalg": 1,
    "kernels": 2,
    "likelihoods": 2,  # pure functions of the latent field, as kernels are of inputs
    "solvers": 3,
    "models": 4,
    "top": 5,
}
#: Third-party packages the math layer may use.
# threadpoolctl: the leaf _threads limits BLAS thread pools (no arrays involved)
LINALG_THIRD_PARTY = ("numpy", "scipy", "sklearn.exceptions", "threadpoolctl")
# dask, zarr: optional, imported inside linalg._chunked's functions only
LINALG_THIRD_PARTY += ("dask", "zarr")
# array_api_compat: optional, imported inside the leaf _array_api's functions only
LINALG_THIRD_PARTY += ("array_api_compat",)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    head = parts[1]
    if head in LEAVES:
        return "leaf"
    return head if head in LAYERS and head not in ("leaf", "top") else "top"


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module, imported names, at module level) for each import statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            found.append((node.module, names, id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], id(node) in top_level))
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _internal(module: str, names: list[str]) -> list[str]:
    """The package modules an import statement loads."""
    if not module.startswith("kronecker_gp"):
        return []
    targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return targets or [module]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    mine = LAYERS[_layer(module)]
    for imported, names, _ in _imports(MODULES[module]):
        for target in _internal(imported, names):
            assert LAYERS[_layer(target)] <= mine, (
                f"{module} ({_layer(module)}) imports {target} ({_layer(target)}), "
                "a higher layer"
            )


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if _layer(m) in ("linalg", "leaf"))
)
def test_math_layer_uses_only_numpy_and_scipy(module):
    for imported, _, _ in _imports(MODULES[module]):
        top = imported.split(".")[0]
        if top == "kronecker_gp" or top in sys.stdlib_module_names:
            continue
        assert imported.startswith(LINALG_THIRD_PARTY), (
            f"{module} imports {imported}; the math layer takes arrays in and out"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_imported_from_another_module(module):
    for imported, names, _ in _imports(MODULES[module]):
        if not imported.startswith("kronecker_gp"):
            continue
        private = [
            n
            for n in names
            if n.startswith("_")
            and not n.startswith("__")
            and f"{imported}.{n}" not in MODULES
        ]
        assert not private, f"{module} imports private {private} from {imported}"


def test_no_import_cycle():
    graph = {
        m: {
            t
            for imported, names, top in _imports(p)
            if top
            for t in _internal(imported, names)
            if t != m and t in MODULES
        }
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # a package imports its own submodules; that edge is not a cycle
            if node == nxt.rsplit(".", 1)[0] or nxt == node.rsplit(".", 1)[0]:
                continue
            if state.get(nxt) == 1:
                cycle = (
                    [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
                )
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_checks_catch_a_violation(tmp_path):
    # the checker itself: an upward import and a private import are seen
    bad = tmp_path / "bad.py"
    bad.write_text("from kronecker_gp.models._optimize import _minimise\n")
    ((imported, names, top),) = _imports(bad)
    assert _layer(imported) == "models" and names == ["_minimise"] and top
    assert LAYERS[_layer(imported)] > LAYERS[_layer("kronecker_gp.linalg._kron")]
