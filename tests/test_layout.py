"""The package's shape stays as designed: one import name, one-way arrows, settings declared once.

The arrows (`A -> B`: A may import B):

    cli, api, pipelines (the top) -> worker, producer, storage, core
    worker   -> storage, core
    producer -> storage, core
    storage  -> core
    core     -> (nothing of docqa)
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Package -> the folder it lives in.
PACKAGES = {
    "docqa.core": ROOT / "docqa" / "core",
    "docqa.cli": ROOT / "docqa" / "cli",
    "docqa.worker": ROOT / "worker",
    "docqa.producer": ROOT / "producer",
    "docqa.storage": ROOT / "storage",
}
# Layer -> the layers it may import besides itself.
ALLOWED = {
    "docqa.core": set(),
    "docqa.storage": {"docqa.core"},
    "docqa.producer": {"docqa.core", "docqa.storage"},
    "docqa.worker": {"docqa.core", "docqa.storage"},
    "docqa.cli": {"docqa.core", "docqa.storage", "docqa.producer", "docqa.worker", "docqa"},
}


def _docqa_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every docqa import in a file, at any depth (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, mod) for line, mod in found if mod == "docqa" or mod.startswith("docqa.")]


def _layer(module: str) -> str:
    for name in PACKAGES:
        if module == name or module.startswith(name + "."):
            return name
    return "docqa"  # the top: docqa itself, docqa.api, docqa.pipelines


def test_every_layer_imports_only_what_is_below_it():
    bad = []
    checked = 0
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            checked += 1
            for line, module in _docqa_imports(path):
                target = _layer(module)
                if target != package and target not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(ROOT)}:{line} ({package}) imports {module}")
    assert checked > 30
    assert not bad, "forbidden arrows:\n" + "\n".join(bad)


def test_the_top_level_modules_do_not_import_the_command_line():
    """The Python API and the HTTP service sit beside the CLI, not on it (only `python -m
    docqa`, the CLI's entry point, may import it)."""
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for path in sorted((ROOT / "docqa").glob("*.py")) if path.name != "__main__.py"
           for line, module in _docqa_imports(path) if _layer(module) == "docqa.cli"]
    assert not bad, "\n".join(bad)


def test_the_arrow_check_catches_a_forbidden_import(tmp_path):
    # The walker sees imports inside functions too: the lazy ones are the easy ones to miss.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from docqa.worker.engine import Engine\n    import docqa.producer.submit\n")
    assert _docqa_imports(sample) == [(2, "docqa.worker.engine"), (3, "docqa.producer.submit")]
    assert _layer("docqa.worker.engine") == "docqa.worker" not in ALLOWED["docqa.storage"]


def test_no_module_imports_the_old_top_level_names():
    old = re.compile(r"^\s*(from|import)\s+(worker|storage|producer)(\.|\s)", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for folder in [*PACKAGES.values(), ROOT / "tests", ROOT / "benchmarks"]
        for p in folder.rglob("*.py")
        if old.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders


@pytest.mark.slow
def test_only_docqa_is_installed_at_the_top_level():
    """`pip show -f docqa` lists files of one top-level package (plus metadata and the script)."""
    out = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "docqa"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("docqa is not installed in this environment")
    files = out.stdout.split("Files:", 1)[1].split()
    tops = {f.split("/")[0] for f in files if not f.startswith("..")}
    tops = {t for t in tops if not t.endswith((".dist-info", ".pth")) and not t.startswith(("__editable__", "__pycache__"))}
    assert tops <= {"docqa"}, tops
    # An editable install maps the folders instead of copying them: check the mapping.
    import docqa.storage
    import docqa.worker

    assert Path(docqa.worker.__file__).parent == ROOT / "worker"
    assert Path(docqa.storage.__file__).parent == ROOT / "storage"


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_with_its_migrations(tmp_path):
    """A regular (non-editable) install: the wheel maps the folders under docqa/."""
    import shutil
    import zipfile

    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("docqa", "worker", "producer", "storage"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("docqa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"docqa"}
    for needed in ("docqa/worker/engine.py", "docqa/producer/submit.py", "docqa/storage/repository.py",
                   "docqa/storage/migrations/versions/0001_initial.py", "docqa/storage/migrations/script.py.mako",
                   "docqa/cli/__init__.py", "docqa/core/params.py"):
        assert needed in names, needed


@pytest.mark.slow
def test_importing_docqa_and_asking_for_status_load_no_torch(tmp_path):
    code = (
        "import sys, docqa; from docqa.cli import main; "
        "import contextlib, io; buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf): main(['status', '--database-url', 'sqlite:///' + sys.argv[1]])\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    db = tmp_path / "status.db"
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_version_is_one_value():
    import docqa
    from docqa.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from importlib.metadata import version

    assert version("docqa") == docqa.__version__


def test_public_api_names_resolve():
    import docqa

    for name in docqa.__all__:
        assert getattr(docqa, name) is not None, name
    with pytest.raises(AttributeError):
        docqa.no_such_name  # noqa: B018


def test_the_readmes_code_layout_names_every_module():
    """The module map cannot go stale: a new module must be named in README "Code layout"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Code layout"): readme.index("## Tests")]
    named = set(re.findall(r"`([A-Za-z_]+)(?:\.[A-Za-z_]+)?`", section)) | set(re.findall(r"\(`([a-z_]+)`", section))
    missing = [str(path.relative_to(ROOT))
               for folder in [*PACKAGES.values(), ROOT / "docqa"]
               for path in sorted(folder.glob("*.py"))
               if path.stem not in ("__init__", "__main__") and path.stem not in named]
    assert not missing, "README 'Code layout' does not name: " + ", ".join(missing)
