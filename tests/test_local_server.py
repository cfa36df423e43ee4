"""Waiting for the local servers: answers when up, names the exit or the timeout otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.run.local_server import ServerDidNotStart, free_port, wait_until_answers


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
