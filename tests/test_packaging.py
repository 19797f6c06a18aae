import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from safedose.data import DATASETS
from safedose.paths import data_root

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("safedose/py.typed", "safedose/data/catalog.yaml", "safedose/annotate/static/app.js",
                "safedose/annotate/static/label.html", "safedose/capability/tasks/arc_easy.yaml")  # fmt: skip


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_a_non_editable_install_carries_its_data_files(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input")
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("safedose-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert set(PACKAGE_DATA) <= set(zf.namelist())

    target = tmp_path / "installed"
    _run(*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "SAFEDOSE_DATA": str(data_root())}
    where = _run(sys.executable, "-c", "import safedose; print(safedose.__file__)", cwd=elsewhere, env=env)
    assert Path(where.strip()).is_relative_to(target)
    listed = json.loads(_run(sys.executable, "-m", "safedose", "data", "list", "--no-verify", "--json",
                             cwd=elsewhere, env=env))  # fmt: skip
    assert [d["name"] for d in listed["datasets"]] == list(DATASETS)


def test_every_markdown_file_the_repository_cites_is_in_it() -> None:
    cited: dict[str, list[str]] = {}
    roots = [REPO / "README.md", *(REPO / d for d in ("src", "tests", "docs", "benchmarks", "configs"))]
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    for path in files:
        if path.suffix in {".py", ".md", ".yaml", ".toml", ".txt"} and "egg-info" not in str(path):
            for name in re.findall(r"[\w./-]+\.md\b", path.read_text(encoding="utf-8", errors="replace")):
                cited.setdefault(name, []).append(str(path.relative_to(REPO)))
    missing = {n: w for n, w in cited.items() if not any((base / n).is_file() for base in (REPO, REPO / "docs"))}
    assert not missing, f"cited but not in the repository: {missing}"
