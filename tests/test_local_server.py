"""Waiting for the local servers: answers when up, names the exit or the timeout otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.orchestration.local_server import ServerDidNotStart, free_port, wait_until_answers


def test_waits_until_a_real_server_answers(tmp_path):
    (tmp_path / "health").write_text("ok")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", proc, 30)
    finally:
        proc.terminate()
        proc.wait()


def test_a_server_that_exits_is_named_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("address already in use\n")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(ServerDidNotStart, match=r"exited with code 3[\s\S]*already in use"):
        wait_until_answers(f"http://127.0.0.1:{free_port()}/", proc, 30, log)


def test_a_server_that_never_answers_times_out():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(ServerDidNotStart, match=r"nothing answered at .* within 1 s"):
            wait_until_answers(f"http://127.0.0.1:{free_port()}/", proc, 1)
    finally:
        proc.kill()
        proc.wait()


RACE_TRIES = int(os.environ.get("PIPELINES_RACE_TRIES", "1"))  # the bench runs 10

_ENSURE = """
from pipelines.console import show_messages
from pipelines.orchestration.prefect_server import ensure_api
show_messages()
print(ensure_api(), flush=True)
"""


def test_two_stages_starting_the_prefect_server_at_once_start_one(tmp_path):
    """Two processes that find no server at the same moment: one starts it, the other waits
    for the lock and reuses it, and the pid file names the server that runs."""
    from pipelines.orchestration import prefect_server

    for attempt in range(RACE_TRIES):
        home = tmp_path / f"prefect-{attempt}"
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PIPELINES_PREFECT_PORT": str(free_port()),
            "PIPELINES_PREFECT": "auto",
        }
        env.pop("PREFECT_API_URL", None)
        starts = [
            subprocess.Popen(
                [sys.executable, "-c", _ENSURE],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [proc.communicate(timeout=240)[0] for proc in starts]
        try:
            assert [proc.returncode for proc in starts] == [0, 0], outputs
            assert sum("starting a local Prefect server" in out for out in outputs) == 1, outputs
            url = f"http://127.0.0.1:{env['PIPELINES_PREFECT_PORT']}/api"
            assert all(out.strip().endswith(url) for out in outputs), outputs
            pid = int((home / "pipelines-server.pid").read_text())
            os.killpg(pid, 0)  # the pid file names a live process group...
            assert prefect_server.healthy(url)  # ...and a server answers
        finally:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("PREFECT_HOME", str(home))
                assert prefect_server.stop_local_server()
        assert not prefect_server.healthy(url, timeout=2)


def test_a_stale_pid_file_never_stops_a_stranger(tmp_path, monkeypatch):
    """After a reboot or a crash, the pid in the file may be another program's: stop checks
    that it is a Prefect server before any signal."""
    from pipelines.orchestration import prefect_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        (tmp_path / "pipelines-server.pid").write_text(str(stranger.pid))
        assert prefect_server.stop_local_server() is False
        assert stranger.poll() is None  # still running
        assert not (tmp_path / "pipelines-server.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_failed_server_start_leaves_no_pid_file(tmp_path, monkeypatch):
    from pipelines.errors import OrchestrationError
    from pipelines.orchestration import prefect_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    with pytest.raises(OrchestrationError, match="did not start"):
        prefect_server.start_local_server(f"http://127.0.0.1:{free_port()}/api", wait_s=0.5)
    assert not (tmp_path / "pipelines-server.pid").exists()
