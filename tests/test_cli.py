"""The command line's process: it ends with Python's own exit status, after every exit handler
the command registered has run, without waiting for the interpreter's teardown; and a stage's
flow runs without Prefect's heartbeat thread, unless the user asks for one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.cli import _exit_status

# A command that registers an exit handler (as Prefect and MLflow do when a stage imports
# them) and ends with a status, run through the console script's `main()`.
_COMMAND = """
import atexit, sys, typer
from pipelines import cli

@cli.app.command()
def demo(status: int, mark: str) -> None:
    atexit.register(lambda: open(mark, "w").write("flushed"))
    print("the command's own line")
    raise typer.Exit(code=status)

sys.argv = ["pipelines", "demo", sys.argv[1], sys.argv[2]]
cli.main()
"""


def test_exit_status_is_pythons() -> None:
    assert [_exit_status(code) for code in (None, 0, 3, 143, "message")] == [0, 0, 3, 143, 1]


def test_a_command_ends_with_its_status_after_its_exit_handlers(tmp_path: Path) -> None:
    for status in (0, 3):
        mark = tmp_path / f"mark-{status}"
        proc = subprocess.run(
            [sys.executable, "-c", _COMMAND, str(status), str(mark)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == status, proc.stderr
        assert proc.stdout.splitlines() == ["the command's own line"]
        assert mark.read_text() == "flushed"  # the handler ran before the process ended


def test_an_escaped_exception_keeps_its_traceback_and_status_1(tmp_path: Path) -> None:
    script = _COMMAND.replace('print("the command', 'raise RuntimeError("boom")  # ')
    proc = subprocess.run(
        [sys.executable, "-c", script, "0", str(tmp_path / "mark")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "RuntimeError: boom" in proc.stderr
    assert (tmp_path / "mark").read_text() == "flushed"


_HEARTBEAT = """
from prefect.settings import get_current_settings
from pipelines.orchestration.flows import stage_settings

with stage_settings():
    print(get_current_settings().flows.heartbeat_frequency)
print(get_current_settings().flows.heartbeat_frequency)
"""


def test_a_stage_flow_has_no_heartbeat_unless_the_user_sets_one(tmp_path: Path) -> None:
    """The heartbeat thread sleeps in whole seconds and a flow's end waits for it; inside a
    stage's settings it is off, and a frequency the user sets (in the environment or in the
    active Prefect profile) still wins."""
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_FLOWS_HEARTBEAT_FREQUENCY = "90"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"}
    cases = (
        ({}, ["None", "180"]),
        ({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}, ["60", "60"]),
        ({"PREFECT_PROFILES_PATH": str(profiles)}, ["90", "90"]),
    )
    for extra, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-c", _HEARTBEAT],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == expected
