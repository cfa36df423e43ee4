"""The real pipeline in a temp copy of the repo: `dvc repro` through a local Prefect server,
GX validation, Keras training, MLflow (SQLite) registry. The tests share one trained project;
each passes alone and in any order: before each one, `baseline` puts back the committed params
and data, brings the pipeline up to date (DVC's run cache restores the trained models seen
before; register runs, and judges them) and makes the workspace's models the champions."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipelines.orchestration import stage_server
from pipelines.orchestration.local_server import free_port, wait_until_answers
from tests.projects import REPRO_TIMEOUT_S, commit_all, copy_project, sh

pytestmark = pytest.mark.e2e

TASK = MODEL = "tabular-dnn"
MODELS = {  # registered model -> its dataset
    "tabular-dnn": "breast_cancer",
    "images-cnn": "digits",
    "sequence-lstm": "co2",
    "sequence-transformer": "co2",
    "text-dnn": "bbc_news",
    "text-transformer": "bbc_news",
}


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


class Project:
    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env

    def repro(self, *extra: str, check: bool = True) -> str:
        proc = sh(
            ["dvc", "repro", *extra], self.root, self.env, check=check, timeout=REPRO_TIMEOUT_S
        )
        return proc.stdout + proc.stderr

    def metrics(self, name: str = TASK) -> dict:
        return json.loads((self.root / "reports" / name / "metrics.json").read_text())

    def set_param(self, path: str, value) -> None:
        params_file = self.root / "params.yaml"
        raw = yaml.safe_load(params_file.read_text())
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
        params_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    def client(self):
        import mlflow

        return mlflow.MlflowClient(f"sqlite:///{self.root / 'mlflow.db'}")

    def versions(self) -> list[str]:
        return sorted(
            str(v.version) for v in self.client().search_model_versions(f"name='{MODEL}'")
        )


# The shipped search of text-dnn, cut to a few trials: the same stage, runs and files, in less
# CI time (a fresh clone's `make run` runs all of them).
SEARCHED, SEARCH_TRIALS = "text-dnn", 4


@pytest.fixture(scope="module")
def project(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("project")
    env = copy_project(repo_root, root)
    project = Project(root, env)
    project.set_param(f"search.{SEARCHED}.trials", SEARCH_TRIALS)
    commit_all(root, env)
    project.first_output = project.repro()
    project.initial = sh(["git", "rev-parse", "HEAD"], root, env).stdout.strip()
    yield project
    sh([sys.executable, "-m", "pipelines.cli", "prefect-server", "stop"], root, env, check=False)


@pytest.fixture(autouse=True)
def baseline(project):
    """The committed params and data, and every stage up to date, whatever ran before."""
    sh(
        ["git", "checkout", project.initial, "--", "params.yaml", "data/external"],
        project.root,
        project.env,
    )
    sh(["git", "clean", "-fdq", "--", "data/external"], project.root, project.env)
    project.repro()
    # The workspace's model is each model's champion (a test may have promoted another), and
    # registration.json says so: a file that does not is removed, and register writes it again.
    client = project.client()
    stale = []
    for name in MODELS:
        path = project.root / f"models/{name}/registration.json"
        registration = json.loads(path.read_text())
        live = str(client.get_model_version_by_alias(name, "champion").version)
        if live != registration["version"] or registration["champion"] != live:
            client.set_registered_model_alias(name, "champion", registration["version"])
            path.unlink()
            stale.append(name)
    if stale:
        project.repro()


def _model_md5(project, name: str = MODEL) -> str:
    from pipelines.registry.lineage import file_md5

    return file_md5(project.root / f"models/{name}/model.keras")


def _agrees_with_registry(project, name: str = MODEL) -> dict:
    """registration.json, after checking that it says what the registry says."""
    registration = json.loads((project.root / f"models/{name}/registration.json").read_text())
    client = project.client()
    live = client.get_model_version_by_alias(name, "champion").version
    version = client.get_model_version(name, registration["version"])
    assert registration["champion"] == str(live), (registration, live)
    assert registration["promoted"] == (registration["version"] == str(live))
    assert registration["gate"] == version.tags["gate"]
    assert registration["model_md5"] == version.tags["model_md5"]
    return registration


def test_full_run_registers_a_champion_per_model(project):
    out = project.first_output
    expected = {f"{stage}@{name}" for stage in ("train", "evaluate", "register") for name in MODELS}
    expected |= {
        f"{stage}@{data}"
        for stage in ("ingest", "validate", "split")
        for data in set(MODELS.values())
    }
    assert expected <= _stages_run(out)
    assert "Flow run" in out, "stages ran as Prefect flows"
    # ...and each model's stages ran in children of the preloaded stage server (its log names
    # the folder and the command of each), not in interpreters of their own.
    log = stage_server.socket_path().with_suffix(".log").read_text()
    for stage in ("train", "evaluate", "register"):
        forked = set(
            re.findall(
                rf" in {re.escape(str(project.root.resolve()))}: \['{stage}', '([^']+)'", log
            )
        )
        assert forked == set(MODELS), (stage, forked)
    # The register stages checked parity in spares forked from the scorer the server started
    # ahead (a fresh interpreter with its imports paid), not in interpreters they started.
    root = re.escape(str(project.root.resolve()))
    handed = re.findall(rf" scorer forked from (\d+) to {root}\n", log)
    assert len(handed) == len(MODELS) and len(set(handed)) == 1, log
    client = project.client()
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    params = yaml.safe_load((project.root / "params.yaml").read_text())["models"]
    for name, dataset in MODELS.items():
        registration = json.loads((project.root / f"models/{name}/registration.json").read_text())
        assert registration["promoted"], registration["gate_failures"]
        champion = client.get_model_version_by_alias(name, "champion")
        run = client.get_run(champion.run_id or registration["run_id"])
        assert run.data.tags["seed"] == "42"
        assert run.data.tags["family"] == params[name]["family"]
        assert run.data.tags["problem"] == name.split("-")[0]
        raw_md5 = lock["stages"][f"ingest@{dataset}"]["outs"][0]["md5"]
        assert run.data.tags["data_md5"] == raw_md5
        assert (project.root / f"reports/validation/{dataset}/index.html").is_file()
        assert (project.root / f"reports/{name}/test_plot.png").stat().st_size > 1000
        assert "best_epoch" in run.data.metrics and "stopped_epoch" in run.data.metrics
    experiments = {
        client.get_run(client.get_model_version_by_alias(n, "champion").run_id).info.experiment_id
        for n in MODELS
    }
    assert len(experiments) == 1, "all runs sit in one experiment"


def test_quality_goals(project):
    tabular, images = project.metrics("tabular-dnn"), project.metrics("images-cnn")
    assert tabular["test"]["accuracy"] >= 0.96  # 119 of the 123 test rows of the hash split
    assert tabular["test"]["accuracy"] > tabular["baselines"]["majority"]["accuracy"]
    assert images["test"]["accuracy"] >= 0.98
    for name in ("sequence-lstm", "sequence-transformer"):
        metrics = project.metrics(name)
        assert metrics["baselines"]["persistence"]["mae"] == pytest.approx(0.405, abs=0.001)
        for baseline in ("persistence", "seasonal_naive"):
            assert metrics["test"]["mae"] < metrics["baselines"][baseline]["mae"], name
    lstm, transformer = project.metrics("sequence-lstm"), project.metrics("sequence-transformer")
    assert lstm["test_rows"] == transformer["test_rows"] == 457, "same split, comparable"
    for name in ("text-dnn", "text-transformer"):
        text = project.metrics(name)
        assert text["test"]["accuracy"] >= 0.95, name
        assert text["test"]["accuracy"] > text["baselines"]["majority"]["accuracy"] + 0.5
        assert text["references"]["tfidf_logreg"]["accuracy"] >= 0.95  # reported, not a gate
        assert text["test_rows"] == 424  # 2,225 articles less 98 duplicates; about 20% for test
        # Text at every length: at or above TF-IDF + LR on each short form of the test articles.
        for form in ("headline", "lead", "words50"):
            reference = text["references"]["tfidf_logreg"][f"accuracy_{form}"]
            assert text["test"][f"accuracy_{form}"] >= reference, (name, form)
    # Whole articles read whole (every window): 414 of the 424, as TF-IDF + LR.
    assert project.metrics("text-transformer")["test"]["accuracy"] >= 0.97


def test_fresh_process_serves_raw_inputs_like_the_pipeline(project):
    """One process that only imports mlflow loads every champion and, on raw test inputs
    (feature rows, 0-16 pixel arrays, ppm windows, article strings), reproduces the pipeline's
    predictions to 1e-6, also through MLflow's serving-input path."""
    script = (
        "import sys, json, numpy as np, pandas as pd, mlflow\n"
        "from mlflow.models import validate_serving_input\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "for name, dataset in json.loads(sys.argv[2]).items():\n"
        "    uri = f'models:/{name}@champion'\n"
        "    m = mlflow.pyfunc.load_model(uri)\n"
        "    meta = m.metadata.metadata\n"
        "    raw = pd.read_parquet(f'data/processed/{dataset}/test.parquet')\n"
        "    x = (raw[meta['features'][0]].to_numpy(str) if not meta['input_shape'] else "
        "raw[meta['features']].to_numpy('float64').reshape(-1, *meta['input_shape']))\n"
        "    got = np.asarray(m.predict(x))\n"
        "    want = np.load(f'reports/{name}/test_predictions.npy')\n"
        "    served = validate_serving_input(uri, json.dumps({'inputs': x[:3].tolist()}))\n"
        "    served_diff = float(np.abs(np.asarray(served) - want[:3]).max())\n"
        "    diff = max(float(np.abs(got - want).max()), served_diff)\n"
        "    print('MAXDIFF', name, diff, got.shape, x.shape, flush=True)\n"
        "assert 'pipelines' not in sys.modules\n"
        "print('NO_PIPELINES_IMPORTED')\n"
    )
    proc = sh(
        [
            sys.executable,
            "-c",
            script,
            f"sqlite:///{project.root / 'mlflow.db'}",
            json.dumps(MODELS),
        ],
        project.root,
        project.env,
    )
    assert "NO_PIPELINES_IMPORTED" in proc.stdout, proc.stdout + proc.stderr
    shapes = {
        "tabular-dnn": "(123, 2) (123, 30)",
        "images-cnn": "(347, 10) (347, 8, 8)",
        "sequence-lstm": "(457, 1) (457, 52, 1)",
        "sequence-transformer": "(457, 1) (457, 52, 1)",
        "text-dnn": "(424, 5) (424,)",
        "text-transformer": "(424, 5) (424,)",
    }
    for name in MODELS:
        found = re.search(rf"MAXDIFF {name} (\S+) (.*)", proc.stdout)
        assert found, (name, proc.stdout[-2000:])
        assert float(found.group(1)) <= 1e-6, name
        assert shapes[name] in found.group(2), (name, found.group(2))


@contextmanager
def _served(project, ref: str) -> Iterator:
    """`pipelines serve REF` on a free port; yields `post(payload) -> (status, body text)`."""
    import urllib.error
    import urllib.request

    port = free_port()
    log_path = project.root / f"serve-{ref.replace('@', '-')}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - outlives this block
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", ref, "--port", str(port)],
        cwd=project.root,
        env=project.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def post(payload: dict) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{base}/invocations",
            json.dumps(payload).encode(),
            {"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    try:
        wait_until_answers(f"{base}/ping", server, 300, log_path)
        yield post
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_champion_is_served_over_http(project):
    """The real `mlflow models serve` (through `pipelines serve`) answers raw JSON with the
    golden predictions, and a malformed request with a 4xx and a message."""
    import numpy as np
    import pandas as pd

    with _served(project, f"{MODEL}@champion") as post:
        raw = pd.read_parquet(project.root / "data/processed/breast_cancer/test.parquet")
        rows = raw.drop(columns=["target"]).to_numpy("float64")[:16]
        status, body = post({"inputs": rows.tolist()})
        assert status == 200, body
        got = np.asarray(json.loads(body)["predictions"])
        want = np.load(project.root / f"reports/{MODEL}/test_predictions.npy")[:16]
        assert np.abs(got - want).max() <= 1e-6
        features = json.loads(
            (project.root / "data/processed/breast_cancer/preprocessing.json").read_text()
        )["features"]
        named = {f: rows[:, i].tolist() for i, f in reversed(list(enumerate(features)))}
        status, body = post({"inputs": named})  # named columns, in any order
        assert status == 200, body
        assert np.abs(np.asarray(json.loads(body)["predictions"]) - want).max() <= 1e-6
        status, body = post({"inputs": rows.tolist(), "params": {"labels": True}})
        assert status == 200, body
        answers = json.loads(body)["predictions"]
        assert [a["predicted"] for a in answers] == [int(i) for i in want.argmax(axis=1)]
        bad_requests = [
            ({"dataframe_split": {"data": rows.tolist()}}, "with 'inputs' key"),
            ({"inputs": [[1.0, 2.0, 3.0]]}, "input of shape (1, 3); it takes (n, 30)"),
            ({"inputs": [["a"] * 30]}, "non-numeric value 'a' at index [0, 0]"),
            ({"inputs": []}, "empty batch"),
            ({"inputs": [[float("nan")] + [1.0] * 29]}, "1 NaN, null or infinite value(s)"),
        ]
        for payload, fragment in bad_requests:
            status, body = post(payload)
            assert status == 400, body
            answer = json.loads(body)
            assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
            assert fragment in answer["message"], body
            if "dataframe_split" not in payload:  # MLflow's own schema message otherwise
                # The model's own message (MLflow's server may put "Failed to predict data"
                # before it).
                assert f"{MODEL}: " in answer["message"], body
            assert "stack_trace" not in answer and "Traceback" not in body


def test_second_repro_is_a_no_op(project):
    out = project.repro()
    assert "Data and pipelines are up to date" in out
    assert not _stages_run(out)


def test_learning_rate_change_reruns_only_train_evaluate_register(project):
    before = project.versions()
    project.set_param("models.tabular-dnn.train.learning_rate", 0.0035)  # a value no test uses
    out = project.repro()
    assert _stages_run(out) == {"train@tabular-dnn", "evaluate@tabular-dnn", "register@tabular-dnn"}
    assert len(project.versions()) == len(before) + 1


def test_editing_one_sequence_family_reruns_only_that_family(project):
    project.set_param("models.sequence-lstm.train.patience", 11)
    out = project.repro()
    assert _stages_run(out) == {
        "train@sequence-lstm",
        "evaluate@sequence-lstm",
        "register@sequence-lstm",
    }


def test_same_seed_and_params_give_the_same_metrics(project):
    import numpy as np

    predictions = project.root / "reports/tabular-dnn/test_predictions.npy"
    first, first_proba = project.metrics(), np.load(predictions)
    out = project.repro("--force", "--single-item", "train@tabular-dnn")
    assert "Running stage 'train@tabular-dnn'" in out
    out = project.repro("--force", "--single-item", "evaluate@tabular-dnn")
    assert "Running stage 'evaluate@tabular-dnn'" in out
    assert project.metrics() == first
    np.testing.assert_array_equal(np.load(predictions), first_proba)
    project.repro()


def test_a_repro_killed_mid_training_recovers_on_the_next_repro(project):
    project.set_param("models.tabular-dnn.train.learning_rate", 0.002)
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch 5/"):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert any(line.startswith("Epoch 5/") for line in seen), "".join(seen[-30:])
    status = sh(["dvc", "status"], project.root, project.env).stdout
    assert "train@tabular-dnn" in status, status  # the half-done stage is not trusted
    out = project.repro()
    assert {"train@tabular-dnn", "register@tabular-dnn"} <= _stages_run(out)
    assert "Data and pipelines are up to date" in project.repro()
    client = project.client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments, "attributes.status = 'RUNNING'") == []


def _prefect_env(project) -> dict:
    return {
        **project.env,
        "PREFECT_API_URL": f"http://127.0.0.1:{project.env['PIPELINES_PREFECT_PORT']}/api",
    }


def test_scheduled_deployment_runs_to_completion_and_keeps_dvc_consistent(project, tmp_path):
    """The README's commands against the real local server: deploy (cron from params), a
    process worker, `prefect deployment run --watch`; then a new version, `dvc status` clean
    and the data pushed to a local-directory DVC remote given by the environment."""
    env = {**_prefect_env(project), "PIPELINES_DVC_REMOTE": str(tmp_path / "remote")}
    bin_dir = Path(sys.executable).parent
    before = project.versions()
    project.set_param("models.tabular-dnn.train.learning_rate", 0.003)
    out = sh([str(bin_dir / "pipelines"), "deploy"], project.root, env).stdout
    assert "schedule '0 3 * * 1' (UTC)" in out
    inspect = sh(
        [str(bin_dir / "prefect"), "deployment", "inspect", "retrain/scheduled"], project.root, env
    ).stdout
    assert "0 3 * * 1" in inspect
    worker_log = open(project.root / "worker.log", "wb")  # noqa: SIM115 - outlives this block
    worker = subprocess.Popen(
        [str(bin_dir / "prefect"), "worker", "start", "--pool", "pipelines"],
        cwd=tmp_path,
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run = sh(
            [
                str(bin_dir / "prefect"),
                "deployment",
                "run",
                "retrain/scheduled",
                "--param",
                'models=["tabular-dnn"]',
                "--watch",
                "--watch-timeout",
                "900",
            ],
            project.root,
            env,
            check=False,
        )
        assert run.returncode == 0, (
            run.stdout + run.stderr + (project.root / "worker.log").read_text()[-4000:]
        )
        assert "Completed" in run.stdout + run.stderr
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        worker_log.close()
    assert len(project.versions()) == len(before) + 1
    summary = sh(
        [str(bin_dir / "prefect"), "artifact", "inspect", "retrain-summary"],
        project.root,
        {**env, "COLUMNS": "1000"},  # the CLI wraps its output to the terminal width
    ).stdout
    summary = " ".join(summary.split())
    assert "| tabular-dnn | dnn |" in summary and "accuracy" in summary, summary[-2000:]
    # The registry's live champion, beside what this run did.
    live = project.client().get_model_version_by_alias(MODEL, "champion").version
    assert "@champion now" in summary and f"| {live} |" in summary, summary[-2000:]
    assert "Data and pipelines are up to date" in project.repro()
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    trained = lock["stages"]["train@tabular-dnn"]
    assert trained["params"]["params.yaml"]["models.tabular-dnn.train"]["learning_rate"] == 0.003
    assert any((tmp_path / "remote").rglob("*")), "nothing was pushed to the DVC remote"
    synced = sh(["dvc", "status", "--cloud"], project.root, project.env)
    assert "in sync" in synced.stdout, synced.stdout


# Two models of different modalities: enough to show parallel chains, cheaper than all six.
DASK_MODELS = ("tabular-dnn", "images-cnn")


def test_dask_runner_trains_models_in_parallel_and_registers_them(project):
    for name in DASK_MODELS:
        project.set_param(f"models.{name}.train.max_epochs", 3)
    before = _version_counts(project)
    chosen = [arg for name in DASK_MODELS for arg in ("--model", name)]
    out = sh(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "retrain",
            "--runner",
            "dask",
            "--no-push",
            *chosen,
        ],
        project.root,
        _prefect_env(project),
    )
    text = out.stdout + out.stderr
    assert "model chain(s) on DaskTaskRunner (dask, " in text, text[-3000:]
    _assert_trained_side_by_side(project, before, text)
    assert "Data and pipelines are up to date" in project.repro()


def test_make_run_runs_changed_chains_side_by_side_and_leaves_dvc_up_to_date(project):
    """The README's `make run`, on a project whose environment is installed: the retraining
    flow on threads runs only the two changed models' chains, at the same time."""
    # Seconds of training each, every epoch run (patience as long): one chain's training may
    # open its run seconds after the other's (the stage server forking both, a data load), and
    # a training of a second or two could end before the other starts (4 epochs of tabular-dnn
    # took 1.2 s and ended 1.0 s before images-cnn's run opened).
    project.set_param("models.tabular-dnn.train.max_epochs", 100)
    project.set_param("models.tabular-dnn.train.patience", 100)
    project.set_param("models.images-cnn.train.max_epochs", 30)
    before = _version_counts(project)
    venv = Path(sys.executable).parent.parent
    out = sh(["make", "run", f"VENV={venv}"], project.root, _prefect_env(project))
    text = out.stdout + out.stderr
    assert "pipelines.cli retrain --runner threads --no-push" in text, text[-3000:]
    assert "2 model chain(s) on ThreadPoolTaskRunner (threads, 2 at once)" in text, text[-3000:]
    _assert_trained_side_by_side(project, before, text)
    assert "reports/tabular-dnn/metrics.json" in out.stdout  # `dvc metrics show`
    assert "Data and pipelines are up to date" in project.repro()


def _version_counts(project) -> dict[str, int]:
    client = project.client()
    return {name: len(client.search_model_versions(f"name='{name}'")) for name in DASK_MODELS}


def _assert_trained_side_by_side(project, before: dict[str, int], text: str) -> None:
    """Each of DASK_MODELS has one new version, and two of their trainings overlapped."""
    client = project.client()
    windows = {}
    for name in DASK_MODELS:
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == before[name] + 1, (name, text[-3000:])
        newest = max(versions, key=lambda v: int(v.version))
        # the training's window: from the run the train stage opened to its last epoch
        curve = client.get_metric_history(newest.run_id, "loss")
        windows[name] = (client.get_run(newest.run_id).info.start_time, curve[-1].timestamp)
    overlapping = [
        (a, b)
        for a in DASK_MODELS
        for b in DASK_MODELS
        if a < b and windows[a][0] < windows[b][1] and windows[b][0] < windows[a][1]
    ]
    assert overlapping, f"no two trainings ran at the same time: {windows}\n{text[-6000:]}"


def _stage_processes(project, model: str) -> list[str]:
    """Command lines of live processes running a stage of `model` in the project."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if Path(os.readlink(cmdline.with_name("cwd"))) != project.root.resolve():
                continue
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"@{model}" in line or f"cli train {model}" in line or f"cli register {model}" in line:
            found.append(line)
    return found


def test_a_stopped_retrain_leaves_no_stage_running_and_registers_nothing(project):
    """SIGTERM to the retrain flow's process while `train` runs, as a Prefect worker sends
    when the flow run is cancelled: its stage processes (each in its own session) stop too,
    no version is registered, and the champion stays."""
    client = project.client()
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    before = project.versions()
    project.set_param(f"models.{MODEL}.train.learning_rate", 0.0011)  # train must run
    # Minutes of training: a stage left to run on would outlast the wait below.
    project.set_param(f"models.{MODEL}.train.max_epochs", 2000)
    project.set_param(f"models.{MODEL}.train.patience", 2000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "retrain", "--model", MODEL, "--no-push"],
        cwd=project.root,
        env=_prefect_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if f"train@{MODEL} | Epoch 3/" in line:
            break
    assert any("Epoch 3/" in line for line in seen), "".join(seen[-30:])
    assert _stage_processes(project, MODEL), "the train stage is not running"
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]  # the flow stops its stage, not waits for it
    assert proc.returncode != 0, rest[-2000:]
    deadline = time.monotonic() + 30
    while _stage_processes(project, MODEL) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _stage_processes(project, MODEL), _stage_processes(project, MODEL)
    assert project.versions() == before
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion


def test_a_retrain_cancelled_through_prefects_api_stops_its_stages(project, tmp_path):
    """The scheduled deployment's run, cancelled with `prefect flow-run cancel` while `train`
    runs: the worker stops the flow, the flow stops its stage processes (each in its own
    session, so the worker's signal never reaches them), no version is registered and the
    champion stays."""
    env = _prefect_env(project)
    bin_dir = Path(sys.executable).parent
    client = project.client()
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    before = project.versions()
    project.set_param(f"models.{MODEL}.train.learning_rate", 0.0011)  # train must run
    project.set_param(f"models.{MODEL}.train.max_epochs", 2000)  # minutes, if left to run
    project.set_param(f"models.{MODEL}.train.patience", 2000)
    sh([str(bin_dir / "pipelines"), "deploy"], project.root, env)
    worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - outlives this block
    worker = subprocess.Popen(
        [str(bin_dir / "prefect"), "worker", "start", "--pool", "pipelines"],
        cwd=tmp_path,
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = sh(
            [
                str(bin_dir / "prefect"),
                "deployment",
                "run",
                "retrain/scheduled",
                "--param",
                f'models=["{MODEL}"]',
            ],
            project.root,
            env,
        ).stdout
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", started).group(1)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(
            f"cli train {MODEL}" in line for line in _stage_processes(project, MODEL)
        ):
            time.sleep(1)
        assert _stage_processes(project, MODEL), (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(5)  # well into the training
        sh([str(bin_dir / "prefect"), "flow-run", "cancel", run_id], project.root, env)
        deadline = time.monotonic() + 90
        while _stage_processes(project, MODEL) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _stage_processes(project, MODEL), (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        worker_log.close()
    assert project.versions() == before
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion


def test_a_retrain_on_a_refused_file_leaves_params_and_lock_as_they_were(project, breast_cancer):
    """`pipelines retrain --source` on a file validation refuses: params.yaml points at the old
    source again, dvc.lock and the data are as they were, and nothing is registered."""
    breast_cancer.loc[4, "target"] = 5
    # Outside data/external, which every ingest depends on: a new file there is a change
    # DVC records whatever the flow does.
    refused = project.root.parent / "refused.csv"
    breast_cancer.to_csv(refused, index=False)
    params_before = (project.root / "params.yaml").read_text()
    lock_before = (project.root / "dvc.lock").read_text()
    before = project.versions()
    proc = sh(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "retrain",
            "--model",
            MODEL,
            "--source",
            f"breast_cancer={refused}",
            "--no-push",
        ],
        project.root,
        _prefect_env(project),
        check=False,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert (
        "error: the new data was refused, so params.yaml is back to "
        "datasets.breast_cancer.source: sklearn:breast_cancer" in proc.stderr
    ), said[-3000:]
    assert (project.root / "params.yaml").read_text() == params_before
    assert (project.root / "dvc.lock").read_text() == lock_before
    assert project.versions() == before
    assert "Data and pipelines are up to date" in project.repro()


def test_bad_data_stops_at_validation_and_registers_nothing(project, breast_cancer):
    before = project.versions()
    champion = project.client().get_model_version_by_alias(MODEL, "champion").version
    breast_cancer.loc[[1, 2], "mean_texture"] = None
    breast_cancer.loc[4, "target"] = 5
    breast_cancer.to_csv(project.root / "data/external/bad.csv", index=False)
    project.set_param("datasets.breast_cancer.source", "data/external/bad.csv")
    out = project.repro(check=False)
    assert "ERROR: failed to reproduce 'validate@breast_cancer'" in out, out[-3000:]
    assert "Running stage 'validate@breast_cancer'" in out
    assert not {s for s in _stages_run(out) if s.startswith("train@")}
    assert "expect_column_values_to_not_be_null column 'mean_texture'" in out
    assert "expect_column_values_to_be_in_set column 'target'" in out
    assert project.versions() == before
    assert project.client().get_model_version_by_alias(MODEL, "champion").version == champion


def _newest_version(project):
    return max(
        project.client().search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version)
    )


def test_an_experiment_registers_a_candidate_that_only_promote_can_make_champion(project):
    client = project.client()
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    cli = [sys.executable, "-m", "pipelines.cli"]

    # Only a gate setting differs: register reruns on the same model file, in a temp copy of
    # the project, finds it registered (the champion) and registers no copy of it.
    before = project.versions()
    ran = sh(
        ["dvc", "exp", "run", "--temp", "-S", f"models.{MODEL}.gate.champion_alpha=0.049"],
        project.root,
        project.env,
    )
    assert f"already registered as version {champion}, which is @champion" in ran.stdout
    assert project.versions() == before

    # A model that learned almost nothing: a candidate that promote refuses, saying why.
    sh(
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            "-S",
            f"models.{MODEL}.train.learning_rate=0.00001",
            "-S",
            f"models.{MODEL}.train.max_epochs=2",
        ],
        project.root,
        project.env,
    )
    weak = _newest_version(project)
    assert weak.tags["candidate"] == "true" and weak.tags["gate"] == "failed"
    weak_run = client.get_run(weak.run_id)  # trained, evaluated and registered in one run
    assert weak_run.info.run_name == f"{MODEL}-{weak.tags['dvc_exp_name']}"
    assert "training_run_id" not in weak_run.data.tags
    assert [m.step for m in client.get_metric_history(weak.run_id, "val_loss")] == [1, 2]
    refused = sh(
        [*cli, "promote", MODEL, str(weak.version)], project.root, project.env, check=False
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{MODEL} version {weak.version} not promoted" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion


def test_a_temp_experiment_registers_only_the_model_it_changed(project):
    """`dvc exp run --temp`: the copy DVC makes lacks the git-ignored registration records; the
    first stage command copies them in from the project, so DVC runs register only for the model
    the experiment changed. The new version is a candidate, and the workspace is left as it
    was."""
    project.repro()  # every registration.json as dvc.lock has it
    client = project.client()
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    before = project.versions()
    lock = (project.root / "dvc.lock").read_text()
    records = {p: p.read_bytes() for p in project.root.glob("models/*/registration.json")}
    assert len(records) > 1
    ran = sh(
        ["dvc", "exp", "run", "--temp", "-S", f"models.{MODEL}.train.learning_rate=0.0017"],
        project.root,
        project.env,
    )
    out = ran.stdout + ran.stderr
    assert _stages_run(out) == {f"train@{MODEL}", f"evaluate@{MODEL}", f"register@{MODEL}"}, out
    assert f"copied the registration.json of {len(records)} models" in out
    (candidate,) = sorted(set(project.versions()) - set(before))
    assert client.get_model_version(MODEL, candidate).tags["candidate"] == "true"
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion
    assert (project.root / "dvc.lock").read_text() == lock
    assert {p: p.read_bytes() for p in project.root.glob("models/*/registration.json")} == records


def test_the_shipped_search_shows_in_mlflow_and_its_model_trains_on_the_winner(project, tmp_path):
    client = project.client()
    assert f"tune@{SEARCHED}" in _stages_run(project.first_output)
    assert "trial 0 (1/4) complete" in project.first_output  # one line per trial
    search = json.loads((project.root / f"models/{SEARCHED}/search/search.json").read_text())
    assert search["trials"] == SEARCH_TRIALS and sum(search["states"].values()) == SEARCH_TRIALS
    parent = client.get_run(search["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith(
        f"{SEARCHED}-search"
    )
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert "search/optimization_history.png" in plots, plots
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(trials) == SEARCH_TRIALS
    assert {t.data.tags["trial_state"] for t in trials} <= {"complete", "pruned"}
    # the champion was trained on the winner, and says so
    registration = json.loads((project.root / f"models/{SEARCHED}/registration.json").read_text())
    run = client.get_run(registration["run_id"])
    assert run.data.tags["search_run_id"] == parent.info.run_id
    for key, value in search["best_params"].items():
        assert run.data.params[key] == str(value), key
    lineage = client.download_artifacts(run.info.run_id, "lineage.json", str(tmp_path))
    assert json.loads(Path(lineage).read_text())["search"]["parent_run_id"] == parent.info.run_id


def test_one_mlflow_run_per_training_carries_its_curves_tests_version_and_signature(project):
    import mlflow

    client = project.client()
    for name in MODELS:
        root = project.root / "models" / name
        run_id = json.loads((root / "run.json").read_text())["run_id"]
        registration = json.loads((root / "registration.json").read_text())
        assert registration["run_id"] == run_id, name  # train opened it, register added to it
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        curve = client.get_metric_history(run_id, "val_loss")
        stopped = json.loads((root / "training.json").read_text())["stopped_epoch"]
        assert [m.step for m in curve] == list(range(1, stopped + 1)), name
        # the run's duration covers the training: it started before the first epoch ended
        assert run.info.start_time <= curve[0].timestamp <= curve[-1].timestamp
        assert run.info.end_time >= curve[-1].timestamp
        assert any(key.startswith("test_") for key in run.data.metrics), name  # evaluate's
        assert "best_epoch" in run.data.metrics and "gate.champion_margin" in run.data.params
        assert run.data.tags["registered_version"] == registration["version"]
        mlflow.set_tracking_uri(f"sqlite:///{project.root / 'mlflow.db'}")
        info = mlflow.models.get_model_info(f"models:/{name}/{registration['version']}")
        (spec,) = info.signature.inputs.inputs
        raw = "str" if info.metadata["modality"] == "text" else "float64"
        assert spec.type.name == raw and spec.shape[0] == -1, name
        assert list(spec.shape[1:]) == info.metadata["input_shape"], name
        (answer,) = info.signature.outputs.inputs
        assert answer.shape == (-1, len(info.metadata["classes"] or [0])), name


def test_a_gate_only_change_registers_no_copy_of_the_same_model(project):
    before = project.versions()
    project.set_param(f"models.{MODEL}.gate.champion_alpha", 0.048)
    out = project.repro()
    assert _stages_run(out) == {f"register@{MODEL}"}
    assert "the model file is already registered as version" in out
    assert project.versions() == before
    registration = _agrees_with_registry(project)
    assert registration["promoted"] and registration["model_md5"] == _model_md5(project)


def test_the_readme_exp_apply_path_promotes_the_candidate_and_a_revert_tells_the_truth(project):
    """README: `dvc exp apply <exp>; git commit; dvc repro` promotes a candidate that passed,
    without training it again; reverting the params afterwards lets the gate decide between
    the restored model and the champion, and registration.json says what the registry says."""
    client = project.client()
    before = project.versions()
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    ran = sh(
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            "-S",
            f"models.{MODEL}.train.learning_rate=0.0011",  # a value no other test uses
            "-S",
            f"models.{MODEL}.gate.champion_margin=0.2",
        ],
        project.root,
        project.env,
    )
    (name,) = re.findall(r"Ran experiment\(s\): (\S+)", ran.stdout + ran.stderr)
    (candidate,) = sorted(set(project.versions()) - set(before))
    assert client.get_model_version(MODEL, candidate).tags["gate"] == "passed"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion

    sh(["dvc", "exp", "apply", name], project.root, project.env)
    sh(["git", "commit", "-qam", f"apply {name}"], project.root, project.env)
    out = project.repro()
    print(out)
    assert _stages_run(out) == {f"register@{MODEL}"}, out  # not trained again
    assert f"already registered as version {candidate}" in out
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == candidate
    registration = _agrees_with_registry(project)
    assert registration["version"] == candidate and registration["promoted"]
    assert project.versions() == sorted([*before, candidate])

    # Revert: the old model comes back from DVC's run cache, register judges it again.
    sh(["git", "checkout", project.initial, "--", "params.yaml"], project.root, project.env)
    out = project.repro()
    print(out)
    assert f"register@{MODEL}" in _stages_run(out) and f"train@{MODEL}" not in _stages_run(out)
    registration = _agrees_with_registry(project)
    assert registration["model_md5"] == _model_md5(project)  # the restored model's version
    assert registration["version"] in before and registration["gate"] in ("passed", "failed")
    assert project.versions() == sorted([*before, candidate])
    assert "Data and pipelines are up to date" in project.repro()
    # HEAD and the index back at the start, the workspace as the revert left it: nothing
    # staged, or the next `dvc exp run` in this project fails to apply its stash.
    sh(["git", "reset", "-q", project.initial], project.root, project.env)


def test_a_text_champion_answers_a_raw_article_over_http(project):
    """`mlflow models serve` takes raw strings: a held-out article, sent as written, comes back
    with its class; a bad request gets a 400 naming the item."""
    import numpy as np
    import pandas as pd

    name = "text-transformer"
    test = pd.read_parquet(project.root / "data/processed/bbc_news/test.parquet")
    predicted = np.load(project.root / f"reports/{name}/test_predictions.npy").argmax(axis=1)
    classes = json.loads((project.root / "data/processed/bbc_news/preprocessing.json").read_text())[
        "classes"
    ]
    article = test.iloc[int(np.flatnonzero(np.asarray(classes)[predicted] == test.category)[0])]
    with _served(project, f"{name}@champion") as post:
        status, body = post({"inputs": [article.text], "params": {"labels": True}})
        assert status == 200, body
        assert json.loads(body)["predictions"][0]["predicted"] == article.category
        status, body = post({"inputs": [article.text, 7]})
        assert status == 400 and "item 1 is int 7, not a string" in body, body
        status, body = post({"inputs": [article.text, None]})
        assert status == 400 and "item 1 is null" in body, body
    # Batch scoring refuses a missing document as serving does (it used to score "nan").
    pd.DataFrame({"text": [article.text, None]}).to_csv(project.root / "docs.csv", index=False)
    proc = sh(
        [sys.executable, "-m", "pipelines.cli", "score", f"{name}@champion", "--input", "docs.csv"],
        project.root,
        project.env,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: docs.csv: text-transformer: item 1 is null" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
