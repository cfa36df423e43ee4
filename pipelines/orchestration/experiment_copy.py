"""What a `dvc exp run --temp` (or queued) copy of the project lacks: each model's
`registration.json`, put in from the project by the first stage command that runs in the copy.

DVC builds the copy from git and its cache. The records are in neither: they are git-ignored
and `cache: false` (dvc.yaml's register stage says why), so that an experiment's commit never
carries one, and `dvc exp apply` leaves the project's record, which then no longer matches
`dvc.lock`, so that the next `dvc repro` judges the applied model. Without them, DVC runs
register in the copy for every model, not only for those the experiment changed (about 0.8 s
each). This is what DVC's `-C` does for paths typed on the command line. A record that does not
match the copy's `dvc.lock` still makes DVC run that model's register, as in the project.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.environment import project_root

# In the copy's own `.dvc/tmp` (git-ignored, removed with the copy): the records were put in.
MARKER = "pipelines-records-copied"


def project_of_copy(here: Path) -> Path | None:
    """The project whose experiment copy `here` (a DVC project root) is, else None."""
    here = here.resolve()
    root = project_root(here)
    return root if here.is_relative_to(root / ".dvc" / "tmp" / "exps") else None


def copy_records_in(here: Path, params: Path) -> list[Path]:
    """In an experiment's copy `here` (else nothing): copy each model's `registration.json`
    that the copy lacks from its project, once per copy. Returns the records copied, relative
    to the project."""
    root = project_of_copy(here)
    if root is None:
        return []
    marker = here / ".dvc" / "tmp" / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return []
    # Imported only in a copy: every stage command asks, and verdicts imports pandas.
    from pipelines.config import load_config
    from pipelines.registry.verdicts import REGISTRATION_FILE

    cfg = load_config(params if params.is_absolute() else here / params)
    copied = []
    for name in cfg.models:
        record = Path(cfg.paths.models) / name / REGISTRATION_FILE
        source, target = root / record, here / record
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied.append(record)
    return copied
