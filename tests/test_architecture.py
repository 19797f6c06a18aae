"""House rules that import-linter does not check: a function-local import of a safedose module says why it is local."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "safedose"


def local_imports_without_reason(root: Path) -> list[str]:
    """`file:line` of every import of a safedose module inside a function with no comment on its lines (or the line
    above): it should move to the module's top, or say which heavy dependency or cycle keeps it local."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom):
                    module = "." if node.level else (node.module or "")
                elif isinstance(node, ast.Import):
                    module = node.names[0].name
                else:
                    continue
                if not module.startswith(("safedose", ".")):
                    continue
                text = lines[node.lineno - 1 : node.end_lineno]
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                if not any("#" in line for line in text) and not above.startswith("#"):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_every_function_local_import_says_why() -> None:
    assert local_imports_without_reason(SRC) == []


def test_the_rule_finds_a_bare_local_import(tmp_path: Path) -> None:
    package = tmp_path / "safedose"
    package.mkdir()
    (package / "m.py").write_text(
        "def f():\n    from safedose.data import mix\n\n"
        "def g():\n    from safedose.generate import generate  # torch: loaded only when a model runs\n"
    )
    assert local_imports_without_reason(package) == ["safedose/m.py:2"]
