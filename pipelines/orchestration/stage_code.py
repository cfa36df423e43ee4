"""The code each stage runs, as one file per stage that DVC tracks in its place.

`dvc.yaml`'s first stage, `code`, depends on every `pipelines/` module a stage runs and writes
`.stage-code/<stage>.md5`: the files that stage's step imports (its modules from the stage
table, and everything they import, read from the source, so imports inside functions count),
each with its MD5, in `md5sum`'s format (`md5sum -c .stage-code/train.md5` checks them). Every
other stage depends on its own file instead of on each module.

A module edit reruns `code`, then exactly the stages whose file changed, as before; but DVC
tracks 43 modules and 31 code files instead of 722 code deps, and every `dvc.lock` rewrite
(after each stage) and every index rebuild is that much shorter (bench/results.md, seventeenth
pass). `tests/test_layout.py` checks the lists against the import graph (grimp's), and `code`
refuses to run while it does not depend on a file a stage runs (`make deps` adds it)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from pipelines.errors import ConfigError
from pipelines.orchestration.stage_table import STAGES

CODE_STAGE = "code"  # its name in dvc.yaml
# Files a stage uses without importing them: the raw-input wrapper is stored as code with
# every version.
STORED_AS_CODE = {"register": ("pipelines/registry/raw_model.py",)}
# Packages whose `__init__.py` is only a namespace, never a dependency.
NAMESPACES = (
    "pipelines",
    "pipelines.data",
    "pipelines.model",
    "pipelines.registry",
    "pipelines.orchestration",
)


def module_file(root: Path, module: str) -> Path:
    """The source file of `module` under `root` (a package's `__init__.py`)."""
    path = root / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_module(root: Path, module: str) -> bool:
    return module_file(root, module).is_file()


def imported_modules(root: Path, module: str) -> set[str]:
    """The `pipelines` modules `module` imports anywhere in its source (in functions too)."""
    source = module_file(root, module)
    tree = ast.parse(source.read_text())
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if _is_module(root, child) else base)
    return {m for m in found if m.split(".")[0] == "pipelines" and _is_module(root, m)}


def stage_files(root: Path) -> dict[str, list[str]]:
    """Stage -> the sorted `pipelines/` files (relative to `root`) it runs."""
    found = {}
    for stage in STAGES:
        modules, todo = set(stage.modules), list(stage.modules)
        while todo:
            for imported in imported_modules(root, todo.pop()) - modules:
                modules.add(imported)
                todo.append(imported)
        files = {
            module_file(root, m).relative_to(root).as_posix()
            for m in modules
            if m not in NAMESPACES
        }
        found[stage.name] = sorted(files | set(STORED_AS_CODE.get(stage.name, ())))
    return found


def digest(root: Path, files: list[str]) -> str:
    """`md5sum`'s lines for `files`, relative to `root`."""
    return "".join(f"{hashlib.md5((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)


def code_stage_deps(root: Path) -> set[str]:
    """The `code` stage's `pipelines/` deps as `root`'s dvc.yaml lists them."""
    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {d for d in stages[CODE_STAGE].get("deps", []) if d.startswith("pipelines/")}


def write_digests(root: Path, out_dir: Path) -> dict[str, int]:
    """Write each stage's `<stage>.md5` into `out_dir`; returns stage -> number of files.
    Refuses (ConfigError) when a stage runs a file the `code` stage does not depend on: an
    edit to that file alone would not rerun `code`, so its stages would not rerun either."""
    found = stage_files(root)
    missing = sorted({f for files in found.values() for f in files} - code_stage_deps(root))
    if missing:
        raise ConfigError(
            f"dvc.yaml: the `code` stage does not depend on {', '.join(missing)}, which a stage "
            "runs, so an edit to it would not rerun that stage: run `make deps` (it writes the "
            "`code` stage's deps from the import graph), then `dvc repro` again"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for stage, files in found.items():
        (out_dir / f"{stage}.md5").write_text(digest(root, files))
        counts[stage] = len(files)
    return counts
