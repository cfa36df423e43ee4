"""The MLflow adapter's experiments, on a real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Another process creates the experiment just after this one's look-up found none, as when two
# stages of a project's first run start together; then this one opens a run.
RACED = """
import json, mlflow
from mlflow.tracking._tracking_service.client import TrackingServiceClient
from pipelines.registry.tracking.connection import use_experiment
look_up = TrackingServiceClient.get_experiment_by_name
def raced(self, name):
    TrackingServiceClient.get_experiment_by_name = look_up
    mlflow.MlflowClient().create_experiment(name)  # the other process, through the real store
    return None
TrackingServiceClient.get_experiment_by_name = raced
chosen = use_experiment("raced")
with mlflow.start_run() as run:
    print(json.dumps([chosen, run.info.experiment_id]))
"""


def test_a_run_lands_in_its_experiment_when_another_process_created_it_at_the_same_time(
    tmp_path: Path,
) -> None:
    """MLflow's `set_experiment` loses the race quietly (it returns the experiment without
    making it active); the run would then go to "Default", and the next stage that resumes it
    in the right experiment fails."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run(
        [sys.executable, "-c", RACED], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    chosen, landed = json.loads(done.stdout.strip().splitlines()[-1])
    assert landed == chosen != "0"
