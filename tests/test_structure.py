"""The package's shape, checked from its source: layers import only downwards, no import cycle
(deferred imports inside functions included), no module over 400 lines.

    python -m pytest tests/test_structure.py -q     # the check; README "Architecture" draws the layers
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mindcv_mobile"
MAX_LINES = 400
# Lowest first. A module may import from its own box and from boxes of a lower layer only.
LAYERS = [
    ("host", "files", "errors"),
    ("download",),  # fetching files: uses files.py for atomic writes
    ("kernels",),
    ("models",),
    ("data",),
    ("run_dir",),
    ("training", "quant", "evaluation", "plot"),
    ("schema",),
    ("config",),
    ("runtime",),
    ("build",),
    ("deploy",),
    ("tasks",),
    ("cli_help",),  # what each entry point's --help lists; cli.py parses with it
    ("cli",),
]
LAYER_OF = {box: i for i, boxes in enumerate(LAYERS) for box in boxes}


def _modules() -> dict:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set:
    """Package modules ``name`` imports, at any depth of its code (deferred imports count)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _box(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def test_every_box_has_a_layer():
    boxes = {_box(m) for m in MODULES} - {""}
    assert boxes <= set(LAYER_OF), f"modules outside the layer table: {sorted(boxes - set(LAYER_OF))}"


def test_imports_only_go_down():
    upward = []
    for module, targets in GRAPH.items():
        if not _box(module):
            continue  # the package root only imports host (checked below)
        for target in targets:
            if _box(target) and _box(target) != _box(module) and LAYER_OF[_box(target)] >= LAYER_OF[_box(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a layer above or beside: " + ", ".join(sorted(upward))
    assert GRAPH["mindcv_mobile"] <= {"mindcv_mobile.host"}


def test_no_import_cycle():
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in GRAPH[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_length(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it by concern"
