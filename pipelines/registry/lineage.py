"""Where a model came from: code version and data hash."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from pipelines.environment import file_lock

# Held by whoever writes a project's dvc.lock beside running stages (the retraining flow
# commits each stage as it finishes, while other chains run) and by every reader of it here:
# DVC rewrites the file in place, so a reader could otherwise see it half written.
LOCK_GUARD = Path(".dvc") / "tmp" / "pipelines-dvc-lock.lock"
LOCK_GUARD_WAIT_S = 600  # commits take about a second each


@contextmanager
def dvc_lock_guarded(lock_path: Path) -> Iterator[None]:
    """Hold the guard of `lock_path` (a `dvc.lock`) for the block: one writer or reader at a
    time. Nothing to hold outside a DVC project."""
    project = Path(lock_path).parent
    held = (
        file_lock(project / LOCK_GUARD, LOCK_GUARD_WAIT_S, "a dvc commit")
        if (project / ".dvc").is_dir()
        else nullcontext()
    )
    with held:
        yield


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes: the same hash DVC records for it in `dvc.lock`. For a folder
    (a sharded dataset): the MD5 of its files' relative paths and MD5s, in name order."""
    path = Path(path)
    if path.is_dir():
        listing = "".join(
            f"{f.relative_to(path).as_posix()} {file_md5(f)}\n"
            for f in sorted(path.rglob("*"))
            if f.is_file()
        )
        return hashlib.md5(listing.encode()).hexdigest()
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """The current commit and whether the working tree has uncommitted changes (read while no
    commit rewrites `dvc.lock`)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    # `git status` hashes a changed tracked file through a memory map, and DVC rewrites
    # dvc.lock in place: read while another chain's stage is committed, it dies with SIGBUS.
    # Without optional locks it leaves the index alone, so the user's own git commands never
    # meet a stage's index.lock.
    with dvc_lock_guarded(Path(cwd or Path.cwd()) / "dvc.lock"):
        dirty = bool(git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no"))
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def dvc_lock_hashes(lock_path: Path, stages: list[str]) -> dict[str, str]:
    """The MD5 of every output of `stages` as recorded in `dvc.lock` (empty if there is none)."""
    import yaml

    if not lock_path.is_file():
        return {}
    # libyaml's parser where PyYAML has it: the full lock (about 4,300 lines, each stage's code
    # deps included) parses in 0.04 s against 0.3 s in pure Python; `train` and `tune` read it
    # once, `register` three times.
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    with dvc_lock_guarded(lock_path):
        text = lock_path.read_text()
    lock = yaml.load(text, Loader=loader) or {}
    hashes = {}
    for stage in stages:
        for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
            hashes[str(out["path"])] = str(out.get("md5", ""))
    return hashes


def lock_key(path: Path, root: Path) -> str:
    """How `dvc.lock` in `root` names `path`: relative to `root` when inside it."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def data_md5(raw_data: Path, dataset: str, root: Path | None = None) -> str:
    """The hash of a dataset's ingested data as DVC records it: the `ingest@<dataset>` output
    in the `dvc.lock` of `root` (the folder the stage runs in), read, not recomputed. A folder
    of shards gets DVC's own `<md5>.dir`, which `pipelines verify` compares with the lock.
    Outside a DVC project (no lock entry), the MD5 of the file, or of the folder's listing."""
    root = root or Path.cwd()
    recorded = dvc_lock_hashes(root / "dvc.lock", [f"ingest@{dataset}"])
    return recorded.get(lock_key(raw_data, root)) or file_md5(raw_data)


# What a served model needs installed: pinned in each version's requirements and recorded in
# its lineage.
SERVED_PACKAGES = ("mlflow", "keras", "tensorflow-cpu", "tensorflow", "numpy", "pandas")


def installed_versions(packages: tuple[str, ...] = SERVED_PACKAGES) -> dict[str, str]:
    """The installed version of each of `packages` that is installed, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def library_versions() -> dict[str, str]:
    """Python and the served packages, for the lineage record."""
    import platform

    return {"python": platform.python_version(), **installed_versions()}
