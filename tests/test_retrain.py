"""The retraining flow's own logic: which stages run, and which faults are retried."""

from __future__ import annotations

import pytest

from pipelines.orchestration.dvc_project import set_sources
from pipelines.orchestration.retrain import data_to_run, models_to_run
from pipelines.orchestration.stage_process import StageFailed, _retry_stage


def test_each_model_runs_from_its_first_changed_stage():
    changed = {"evaluate@a", "register@a", "register@b", "split@digits", "train@d"}
    assert models_to_run(changed, ["a", "b", "c", "d"]) == {
        "a": ["evaluate@a", "register@a"],
        "b": ["register@b"],
        "d": ["train@d", "evaluate@d", "register@d"],
    }


def test_a_searched_model_runs_from_its_search_when_the_search_changed():
    changed = {"tune@a", "train@a", "train@b"}
    assert models_to_run(changed, ["a", "b"], searched={"a", "b"}) == {
        "a": ["tune@a", "train@a", "evaluate@a", "register@a"],
        "b": ["train@b", "evaluate@b", "register@b"],
    }


def test_each_dataset_runs_from_its_first_changed_data_stage_and_an_unchanged_one_not_at_all():
    changed = {"validate@a", "ingest@c", "split@c", "train@m"}
    assert data_to_run(changed, ["a", "b", "c"]) == [
        "validate@a",
        "split@a",
        "ingest@c",
        "validate@c",
        "split@c",
    ]
    assert data_to_run({"train@m"}, ["a", "b"]) == []


@pytest.mark.parametrize(
    ("tail", "retried"),
    [
        ("sqlite3.OperationalError: database is locked", True),
        ("urllib3: Max retries exceeded with url: /api/2.0/mlflow/runs/create", True),
        ("ERROR: Unable to acquire lock. Most likely another DVC process is running", True),
        ("error: data/raw/x.parquet failed 2 of 127 checks (suite ...)", False),
        ("tabular-dnn: loss became inf at epoch 2", False),
    ],
)
def test_only_transient_faults_are_retried(tail, retried):
    from prefect.states import Failed

    error = StageFailed("train@tabular-dnn", 1, tail, retries=2)
    assert error.transient is retried
    assert _retry_stage(None, None, Failed(data=error)) is retried
    assert ("retried up to 2 time(s)" if retried else "not retried") in str(error)
    assert tail in str(error)


def test_a_failure_message_says_what_happened():
    # register stages are never retried, and their message must not claim otherwise
    locked = StageFailed("register@tabular-dnn", 1, "database is locked", retries=0)
    assert "never retried" in str(locked) and "retried up to" not in str(locked)
    timed_out = StageFailed("train@tabular-dnn", -1, "timed out after 60 s\nEpoch 3/40")
    assert str(timed_out).startswith("stage train@tabular-dnn timed out (")
    assert "timed out after 60 s" in str(timed_out) and "Epoch 3/40" in str(timed_out)


def test_new_sources_are_written_to_params_keeping_comments(tmp_path, repo_root):
    params = tmp_path / "params.yaml"
    params.write_text((repo_root / "params.yaml").read_text())
    set_sources(params, {"breast_cancer": "data/external/new.csv"})
    text = params.read_text()
    assert "source: data/external/new.csv" in text
    assert "# The validate stage" in text, "comments must survive"
    with pytest.raises(KeyError, match=r"datasets\.nope"):
        set_sources(params, {"nope": "x.csv"})


def test_the_deployment_entrypoint_is_the_retraining_flow(repo_root):
    from prefect.flows import Flow, load_flow_from_entrypoint

    from pipelines.orchestration import retrain

    assert isinstance(retrain.retrain, Flow) and isinstance(retrain.train_models, Flow)
    loaded = load_flow_from_entrypoint(
        str(repo_root / "pipelines/orchestration/retrain.py") + ":retrain"
    )
    assert loaded.name == "retrain"


def test_stages_finishing_together_are_all_committed_to_dvc_lock(tmp_path):
    """Chains on threads commit their stages as they finish: commits that start at once wait
    for each other (DVC's own lock gives up after about 3 s: here the later ones would fail)
    and dvc.lock records them all."""
    import subprocess
    import threading

    import yaml

    from pipelines.environment import executable
    from pipelines.orchestration.dvc_project import commit_stage

    names = [f"s{i}" for i in range(12)]
    stages = {n: {"cmd": f"echo {n} > {n}.txt", "outs": [f"{n}.txt"]} for n in names}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for args in (["git", "init", "-q"], [executable("dvc"), "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    for name in names:  # each stage's command, run as the flow runs it: outside DVC
        (tmp_path / f"{name}.txt").write_text(f"{name}\n")
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def commit(name: str) -> None:
        start.wait()
        try:
            commit_stage(tmp_path, name)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=commit, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(names)
    status = subprocess.run(
        [executable("dvc"), "status"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def test_a_stage_reading_dvc_lock_waits_for_a_commit_that_is_rewriting_it(tmp_path):
    """DVC rewrites dvc.lock in place; a stage that reads it while the flow commits another
    chain's stage waits for the commit, and reads the whole file, not half of it."""
    import threading
    import time

    import yaml

    from pipelines.registry.lineage import dvc_lock_guarded, dvc_lock_hashes

    (tmp_path / ".dvc").mkdir()
    lock = tmp_path / "dvc.lock"
    outs = [{"path": f"data/{i}.parquet", "md5": f"{i:032d}"} for i in range(20)]
    full = yaml.safe_dump({"schema": "2.0", "stages": {"split@d": {"outs": outs}}})
    lock.write_text(full[: len(full) // 2])  # the commit has written half of it
    writing = threading.Event()

    def commit() -> None:
        with dvc_lock_guarded(lock):
            writing.set()
            time.sleep(0.5)
            lock.write_text(full)

    writer = threading.Thread(target=commit)
    writer.start()
    writing.wait()
    assert dvc_lock_hashes(lock, ["split@d"]) == {o["path"]: o["md5"] for o in outs}
    writer.join()


def test_the_commit_a_run_records_is_read_while_no_commit_rewrites_dvc_lock(tmp_path):
    """`git status` hashes a changed tracked file through a memory map; DVC rewrites dvc.lock
    in place, so a status that reads it while another chain's stage is committed dies with
    SIGBUS (seen once in the Dask runner's parallel registrations). It waits for the commit."""
    import os
    import subprocess
    import sys
    import time

    from pipelines.registry.lineage import git_state
    from tests.projects import commit_all, sh

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    (tmp_path / ".dvc").mkdir()
    lock = tmp_path / "dvc.lock"
    lock.write_bytes(b"x" * (8 << 20))
    sh(["git", "init", "-q"], tmp_path, env)
    commit_all(tmp_path, env)
    rewrite = (  # what `dvc commit` does to dvc.lock, under the guard the flow holds for it
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pipelines.registry.lineage import dvc_lock_guarded\n"
        "lock, end = Path(sys.argv[1]), time.monotonic() + 6\n"
        "while time.monotonic() < end:\n"
        "    with dvc_lock_guarded(lock), open(lock, 'r+b') as fh:\n"
        "        fh.truncate(0); fh.flush(); fh.write(b'y' * (8 << 20))\n"
        "    time.sleep(0.001)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", rewrite, str(lock)])
    try:
        time.sleep(0.5)
        states = [git_state(tmp_path) for _ in range(40)]
    finally:
        writer.kill()
        writer.wait()
    assert {s["git_dirty"] for s in states} == {"true"}
