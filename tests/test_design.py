"""The shape of the code, checked: what the design review (issue 12) found, as tests that fail if it comes back.

Each test reads the source with ``ast`` (no imports of the modules under test), so it is fast and says
exactly which file/function breaks the rule.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "edgecnn"
# A standalone script copied into deployment bundles: runs without edgecnn, imports what the device has.
STANDALONE = {PKG / "deploy_templates" / "run.py"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100
# Genuinely heavy optional modules may be imported where they are used; everything else at module level.
LAZY_OK = {"tensorrt", "nncf", "openvino", "cuda", "pycuda", "matplotlib", "modelopt"}


def _modules():
    return [p for p in sorted(PKG.rglob("*.py")) if p not in STANDALONE]


def _module_names():
    return {_name(p) for p in _modules()}


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULE_NAMES: set = set()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path):
    """(target module, node, inside a function?, only names submodules?) for every import of ``path``."""
    MODULE_NAMES.update(_module_names())
    module, is_pkg = _name(path), path.name == "__init__.py"
    out = []

    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, child, in_func, False) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_pkg, child)
                subs = [f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in MODULE_NAMES]
                # "from . import x" / "from .pkg import submodule" depends on the submodule, not the package
                out.append((target, child, in_func, bool(subs) and len(subs) == len(child.names)))
                out.extend((s, child, in_func, False) for s in subs)
            visit(child, in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(_tree(path), False)
    return out


def test_no_module_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by what they own): {long}"


def test_no_function_over_100_lines():
    long = []
    for p in _modules():
        for node in ast.walk(_tree(p)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 100 lines (split into resolve -> run -> record):\n" + "\n".join(long)


def test_no_import_cycles_even_through_function_level_imports():
    names = {_name(p) for p in _modules()}
    graph = defaultdict(set)
    for p in _modules():
        src = _name(p)
        for target, _node, _, only_submodules in _imports(p):
            if target in names and target != src and not only_submodules:
                graph[src].add(target)
    # Tarjan's strongly connected components: every component of more than one module is a cycle.
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(names):
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_function_level_imports_only_for_heavy_optional_modules():
    bad = []
    for p in _modules():
        in_cli = p.parent.name == "cli" and p.name.startswith("cmd_")
        for target, node, in_func, _ in _imports(p):
            if (
                not in_func
                or isinstance(node, ast.ImportFrom)
                and target != _resolve(_name(p), p.name == "__init__.py", node)
            ):
                continue  # module level, or the per-name duplicate of a from-import
            top = target.split(".")[0]
            if top in LAZY_OK:
                continue
            if in_cli and top == "edgecnn":
                continue  # a command imports the library function it calls (keeps `edgecnn --help` instant)
            bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {target}")
    assert not bad, "function-level imports of modules that belong at the top of the file:\n" + "\n".join(bad)


def _source_lines(pattern: str, *, exclude=()):
    rx = re.compile(pattern)
    hits = []
    for p in _modules():
        rel = str(p.relative_to(ROOT))
        if any(rel.startswith(e) for e in exclude):
            continue
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if rx.search(line):
                hits.append(f"{rel}:{i}: {line.strip()}")
    return hits


def test_one_onnx_runtime_session_factory():
    hits = _source_lines(r"InferenceSession\(", exclude=("edgecnn/runtime/onnxrt.py",))
    assert not hits, "ONNX Runtime sessions are made by runtime.onnxrt.create_session only:\n" + "\n".join(hits)


def test_data_source_strings_are_parsed_in_one_place():
    hits = _source_lines(r"""(==|!=|\bin)\s*\(?["']digits["']|startswith\(["']synthetic""", exclude=("edgecnn/data/",))
    assert not hits, "parse --data once with DataSource.parse and ask the object:\n" + "\n".join(hits)


def test_class_count_check_written_once():
    hits = _source_lines(r"classes but", exclude=("edgecnn/data/source.py",))
    assert not hits, "use DataSource.check_classes:\n" + "\n".join(hits)


def test_option_rules_are_not_repeated_in_the_cli():
    """Rules live in the library (OptionError -> exit 2); a command only raises usage errors click can't."""
    hits = _source_lines(r"raise click\.(UsageError|BadParameter)", exclude=("edgecnn/cli/__init__.py",))
    assert not hits, "option rules belong in the options object's validate():\n" + "\n".join(hits)


def test_whole_split_is_never_materialised():
    hits = _source_lines(r"def load_eval_set|def _eval_images")
    assert not hits, "stream evaluation batches (edgecnn.evaluation) instead:\n" + "\n".join(hits)


def test_small_findings_stay_fixed():
    text = "\n".join(p.read_text(encoding="utf-8") for p in _modules())
    assert "FIELD-NOTES" not in text, "cite what is in the repository, not a file outside it"
    assert "--list-layers" not in text or re.search(r"""["']--list-layers["']""", text), (
        "an error message names an option that exists"
    )
    assert not re.search(r"^ROUTES\s*=", text, re.M), "no unused routing table"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"rich[>=<~ ]', pyproject), "rich is used, so it is declared"
    assert "[tool.ruff]" in pyproject, "a formatter and linter are configured"


def test_one_chain_builds_candidates_for_compress_and_sweep():
    """prune -> fine-tune -> export -> INT8/FP16 is composed once (compress/chain.py)."""
    hits = _source_lines(
        r"\b(prune|quantize|convert_fp16|export_onnx)\(",
        exclude=(
            "edgecnn/compress/chain.py",
            "edgecnn/cli/",
            "edgecnn/compress/prune.py",
            "edgecnn/compress/prune_graph.py",
            "edgecnn/compress/quantize.py",
            "edgecnn/compress/fp16.py",
            "edgecnn/export/",
            "edgecnn/compress/distill.py",
            "edgecnn/compress/sparsity.py",
            "edgecnn/deploy",
        ),
    )
    hits = [h for h in hits if "def " not in h.split(":", 2)[2]]
    assert not hits, "compose stages in edgecnn/compress/chain.py only:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", ["CONTRIBUTING.md"])
def test_contributing_says_where_a_stage_is_added(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    assert "chain.py" in text and "Options" in text
