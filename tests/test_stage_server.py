"""The stage server: a command runs in a child forked from a preloaded parent exactly as
`python -m` would run it (arguments, folder, environment, streams, exit status, its own code),
its signals reach the child, and a command the server cannot stand in for runs by itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.orchestration import stage_server

PROBE = """
import gc, json, os, signal, sys, time
if "--sleep" in sys.argv:  # its own SIGTERM status, set before it says it is up: 143 for one
    got = []  # SIGTERM, 144 if a second one follows within half a second
    def stop(signum, frame):
        got.append(signum)
        if len(got) == 1:
            time.sleep(0.5)
            sys.exit(142 + len(got))
    signal.signal(signal.SIGTERM, stop)
print(json.dumps({
    "cwd": os.getcwd(), "argv": sys.argv[1:], "x": os.environ.get("PROBE_X"),
    "pid": os.getpid(), "preloaded": "great_expectations" in sys.modules, "version": VERSION,
    "frozen": gc.get_freeze_count(),
}), flush=True)
print("on stderr", file=sys.stderr, flush=True)
if "--sleep" in sys.argv:
    time.sleep(120)
sys.exit(3)
"""
# A command as `pipelines.cli.main` sends one: the probe module in the server, or here.
CLIENT = """
import os, sys
from pipelines.orchestration import stage_server
status = stage_server.run_in_server(os.environ.get("PROBE_MODULE", "probe"), sys.argv[1:])
if status is None:
    print(f"ran here")
    sys.exit(99)
sys.exit(status)
"""

# A seeded Keras fit, and whether TensorFlow was imported before the command started.
FIT = """
import json, sys
preloaded = "tensorflow" in sys.modules
import keras, numpy as np
keras.utils.set_random_seed(7)
x = np.random.default_rng(7).random((256, 8), dtype="float32")
y = (x.sum(axis=1) > 4).astype("float32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy")
loss = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"][-1]
print(json.dumps({"preloaded": preloaded, "loss": float(loss)}))
"""


def _probe(folder: Path, version: int) -> None:
    (folder / "probe.py").write_text(f"VERSION = {version}\n{PROBE}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This environment's server with its own socket folder, and a working folder with the
    probe and the client in it."""
    runtime = tmp_path_factory.mktemp("run")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    path = stage_server.socket_path()
    assert path is not None
    stage_server.start_server(path)
    _wait_for(path)
    work = tmp_path_factory.mktemp("work")
    (work / "client.py").write_text(CLIENT)
    _probe(work, 1)
    yield work
    assert stage_server.stop_server()
    if old is None:
        del os.environ["XDG_RUNTIME_DIR"]
    else:
        os.environ["XDG_RUNTIME_DIR"] = old


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(str(path)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"no stage server on {path}: {path.with_suffix('.log').read_text()}")


def _client(work: Path, *args: str, python: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python, str(work / "client.py"), *args]


def _run(work: Path, *args: str, python: tuple[str, ...] = (), **env: str):
    return subprocess.run(
        _client(work, *args, python=python),
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_command_runs_in_a_forked_child_as_python_m_runs_it(server):
    done = _run(server, "a", "--b", PROBE_X="seen")
    assert done.returncode == 3, done.stdout + done.stderr
    seen = json.loads(done.stdout)
    assert seen["cwd"] == str(server)
    assert seen["argv"] == ["a", "--b"]
    assert seen["x"] == "seen"  # the command's environment, not the server's
    assert seen["preloaded"]  # imported before the command came: it ran in the server's child
    assert seen["frozen"] > 100_000  # the preload, which the child's collections skip
    assert done.stderr == "on stderr\n"
    log = stage_server.socket_path().with_suffix(".log").read_text()
    assert f"{seen['pid']} in {server}: ['a', '--b']" in log


def test_a_child_trains_on_the_preloaded_tensorflow_as_a_fresh_interpreter_does(server):
    """TensorFlow is imported in the server, never run there: a child starts its own runtime
    and a seeded fit gives the same loss as in an interpreter of its own."""
    (server / "fit.py").write_text(FIT)
    done = _run(server, PROBE_MODULE="fit")
    assert done.returncode == 0, done.stdout + done.stderr
    forked = json.loads(done.stdout.splitlines()[-1])
    alone = subprocess.run(
        [sys.executable, "fit.py"], cwd=server, capture_output=True, text=True, timeout=120
    )
    assert alone.returncode == 0, alone.stderr
    fresh = json.loads(alone.stdout.splitlines()[-1])
    assert forked["preloaded"] and not fresh["preloaded"]
    assert forked["loss"] == fresh["loss"]


def test_each_command_imports_its_own_code(server):
    assert json.loads(_run(server).stdout)["version"] == 1
    _probe(server, 2)  # an edit between two commands
    try:
        assert json.loads(_run(server).stdout)["version"] == 2
    finally:
        _probe(server, 1)


def test_a_signal_to_the_command_reaches_its_child(server):
    proc = subprocess.Popen(
        _client(server, "--sleep"), cwd=server, stdout=subprocess.PIPE, text=True
    )
    child = json.loads(proc.stdout.readline())["pid"]
    assert child != proc.pid
    proc.send_signal(signal.SIGTERM)  # what a stopped `dvc repro` sends
    try:
        status = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(_stuck(proc.pid, *_parent(child), child))  # the server's supervisor
    assert status == 143  # the child's own handler chose it: one SIGTERM reached the child
    assert not Path(f"/proc/{child}").exists()


def _parent(pid: int) -> list[int]:
    """The process's parent, none if the process is gone."""
    with contextlib.suppress(OSError):
        return [int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])]
    return []


def _stuck(*pids: int) -> str:
    """What the command and its child are doing, for a test that waited in vain."""
    states = []
    shown = ("Name", "State", "PPid", "Threads", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigCgt")
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            status = [line for line in lines if line.split(":")[0] in shown]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            status, wchan = ["gone"], ""
        stack = ""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # where py-spy runs
            stack = subprocess.run(  # the Python stack
                [Path(sys.executable).with_name("py-spy"), "dump", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        states.append(f"{pid}: {' '.join(status)} in {wchan}\n{stack}")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log = stage_server.socket_path().with_suffix(".log").read_text()[-3000:]
    return "\n".join([*states, log])


def test_a_command_killed_outright_takes_its_child_with_it(server):
    proc = subprocess.Popen(
        _client(server, "--sleep"), cwd=server, stdout=subprocess.PIPE, text=True
    )
    child = json.loads(proc.stdout.readline())["pid"]
    proc.kill()  # no chance to forward anything
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()


@pytest.mark.parametrize(
    ("python", "env"),
    [(("-X", "importtime"), {}), ((), {"PIPELINES_STAGE_SERVER": "off"})],
)
def test_a_command_the_server_cannot_stand_in_for_runs_by_itself(server, python, env):
    done = _run(server, python=python, **env)
    assert done.returncode == 99 and done.stdout.startswith("ran here"), done.stdout + done.stderr


def test_another_value_read_at_import_gets_a_server_of_its_own(server, monkeypatch):
    """OpenBLAS reads its thread count when NumPy is imported: a command with another count
    must not run in a child that NumPy was imported into with the first."""
    count = "3" if os.environ.get("OMP_NUM_THREADS") != "3" else "4"  # not this process's
    first = _run(server, OMP_NUM_THREADS=count)  # no server for it yet: it starts one
    assert first.returncode == 99, first.stdout + first.stderr
    monkeypatch.setenv("OMP_NUM_THREADS", count)
    path = stage_server.socket_path()
    try:
        _wait_for(path)
        done = _run(server)
        assert done.returncode == 3 and json.loads(done.stdout)["preloaded"], done.stdout
    finally:
        stage_server.stop_server()


# A stand-in scorer, started as the server starts one (its flag, then its socket): it forks
# a spare per request (and waits on after a keep-alive), which says its pid, reads one line
# and says who it is.
SPARE = """
import json, os, signal, socket, sys
control = socket.socket(fileno=int(sys.argv[-1]))
assert sys.argv[-2] == "--zygote"
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
while True:
    got, fds, _, _ = socket.recv_fds(control, 1, 2)
    if got == b"k" and not fds:  # a keep-alive
        continue
    if not got:
        os._exit(0)
    if os.fork() == 0:
        channel = socket.socket(fileno=fds[0])
        break
    for fd in fds:
        os.close(fd)
channel.sendall(f"{os.getpid()}\\n".encode())
reader = channel.makefile("rb")
line = reader.readline()
channel.sendall((json.dumps({"pid": os.getpid(), "x": os.environ.get("PROBE_X"),
    "asked": json.loads(line), "pipelines": "pipelines" in sys.modules,
    "parent": os.getppid()}) + "\\n").encode())
"""


def _ask(channel: socket.socket) -> dict:
    with channel, channel.makefile("rb") as reader:
        pid = int(reader.readline())
        channel.sendall(b'"jobs"\n')
        answer = json.loads(reader.readline())
        assert answer["pid"] == pid
        return answer


def test_the_server_forks_a_spare_scorer_for_each_command_of_that_environment(server):
    """A register command takes a spare forked from the scorer the server started ahead with
    its script and environment, as many as ask; a command with another environment gets none
    (and starts its own), and the server starts a scorer for that one, keeping the first: two
    projects at work side by side do not take each other's. Only the scorers of the last
    MAX_SCORERS environments asked for are kept, those still running first."""
    argv = [sys.executable, "-c", SPARE, "--zygote"]
    env = {**os.environ, "PROBE_X": "one"}
    assert not stage_server.scorer_ready(argv, env)  # none yet: the server starts one
    assert stage_server.scorer_ready(argv, env)
    channel, log = stage_server.take_scorer(argv, {**env, "DVC_EXP_NAME": "x"})
    assert log.exists()
    seen = _ask(channel)
    assert seen["x"] == "one" and seen["asked"] == "jobs" and not seen["pipelines"]
    assert _ended(seen["pid"])  # it served one command
    again, _ = stage_server.take_scorer(argv, env)  # the next one, forked at once
    second = _ask(again)
    assert second["pid"] != seen["pid"] and second["parent"] == seen["parent"]
    assert stage_server.take_scorer(argv, {**env, "PROBE_X": "two"}) is None
    channel, _ = stage_server.take_scorer(argv, {**env, "PROBE_X": "two"})
    third = _ask(channel)
    assert third["x"] == "two" and third["parent"] != seen["parent"]
    channel, _ = stage_server.take_scorer(argv, env)  # the first environment's is still there
    assert _ask(channel)["parent"] == seen["parent"]
    others = [f"other-{n}" for n in range(stage_server.MAX_SCORERS - 1)]
    for other in others:  # "two" is now the least recently asked for, and is dropped
        assert not stage_server.scorer_ready(argv, {**env, "PROBE_X": other})
    assert _ended(third["parent"])
    channel, _ = stage_server.take_scorer(argv, env)
    assert _ask(channel)["parent"] == seen["parent"]
    assert stage_server.take_scorer(argv, {**env, "PROBE_X": "two"}) is None
    # A scorer that has ended (idle for its wait) is dropped before a live one is.
    channel, _ = stage_server.take_scorer(argv, {**env, "PROBE_X": "two"})
    ended = _ask(channel)["parent"]
    os.kill(ended, signal.SIGKILL)
    assert _ended(ended)
    channel, _ = stage_server.take_scorer(argv, {**env, "PROBE_X": others[-1]})
    _ask(channel)  # "one" is now the least recently asked for, "two" has ended
    assert not stage_server.scorer_ready(argv, {**env, "PROBE_X": "three"})
    channel, _ = stage_server.take_scorer(argv, env)
    assert _ask(channel)["parent"] == seen["parent"]


# A register command in the server's child, after the CLI has set a variable that names
# another server's socket (TF_CPP_MIN_LOG_LEVEL): it asks twice for a spare scorer.
ASKS = """
import json, os, sys
from pipelines.orchestration import stage_server
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3" if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3" else "1"
argv = [sys.executable, "-c", "import time; time.sleep(30)", "--zygote"]
print(json.dumps([stage_server.scorer_ready(argv, dict(os.environ)) for _ in range(2)]))
"""


def test_a_command_in_the_server_asks_the_server_it_runs_in_for_its_scorer(server):
    """The child asks the server that forked it, whatever the command has set since: the
    first ask starts a scorer and the second finds it ready (asked on another socket, neither
    would, and every register would import its clean interpreter's packages itself)."""
    (server / "asks.py").write_text(ASKS)
    done = _run(server, PROBE_MODULE="asks")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == [False, True]


def _ended(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not Path(f"/proc/{pid}").exists()


LIGHT_CLIENT = """
import atexit, runpy, sys
heavy = ("pipelines.config", "pipelines.orchestration.stages")
atexit.register(lambda: print("IMPORTED", [m for m in heavy if m in sys.modules]))
sys.argv = ["pipelines.cli", "evaluate", "--help"]
runpy.run_module("pipelines.cli", run_name="__main__", alter_sys=True)
"""


def test_a_stage_command_reaches_the_server_before_it_imports_the_config(server):
    """`python -m pipelines.cli <stage>` hands the command to the server before the stage
    commands are built: the command's own process never imports the config and its schemas
    (0.1 s of every stage), and the child still runs the command."""
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_CLIENT],
        cwd=server,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Usage" in done.stdout and "evaluate" in done.stdout, done.stdout
    assert done.stdout.strip().splitlines()[-1] == "IMPORTED []", done.stdout
