"""Command line: one command per pipeline stage (called by `dvc.yaml`), built from the stage's
plain function in `pipelines.orchestration.stages`, plus helpers.

Every stage command runs its Prefect flow against a local server started on demand (see
`pipelines.orchestration.prefect_server`); set PIPELINES_PREFECT=off to run the plain functions
instead.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import typer

from pipelines.console import show_messages
from pipelines.orchestration.stage_table import STAGES

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Raw data to a validated, registered model."
)
server_app = typer.Typer(no_args_is_help=True, help="The on-demand local Prefect server.")
app.add_typer(server_app, name="prefect-server")
stage_server_app = typer.Typer(
    no_args_is_help=True, help="The preloaded parent that stage processes are forked from."
)
app.add_typer(stage_server_app, name="stage-server")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Unwind normally, so open MLflow runs are ended FAILED and temp files are cleaned up.
    raise SystemExit(128 + signum)


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter hides the pipeline's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@app.callback()
def _setup() -> None:
    _quiet_tensorflow()
    show_messages()


Params = Annotated[Path, typer.Option("--params", help="Params file.")]


def _fail(message: str) -> None:
    """Print a known failure's message once and exit 1; PIPELINES_DEBUG=1 adds the traceback
    (the Prefect run log always has it)."""
    if os.environ.get("PIPELINES_DEBUG", "").strip() not in ("", "0"):
        import traceback

        traceback.print_exc()
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _call_stage(name: str, **kwargs: Any) -> Any:
    """Run a stage as its Prefect flow (or as the plain stage when Prefect is off, without
    importing Prefect), turning the pipeline's own errors into one message and exit code 1."""
    from pipelines.errors import KnownFailure
    from pipelines.orchestration.prefect_server import ensure_api, quiet_known_failures

    expected = (KnownFailure, FileNotFoundError)
    try:
        if ensure_api():
            if "prefect.context" in sys.modules:
                # Imported before the API URL was set (a stage server's child): Prefect read
                # its settings at import, so read them again from this environment.
                from prefect.context import refresh_global_settings_context

                refresh_global_settings_context()
            from pipelines.orchestration import flows

            quiet_known_failures()
            return flows.run_stage_flow(name, **kwargs)
        from pipelines.orchestration import stages

        return getattr(stages, name)(**kwargs)
    except expected as err:
        _fail(str(err))


def _copy_records_in(params: Path | None) -> None:
    """In an experiment's `--temp` or queued copy, before DVC reaches the register stages: the
    project's registration records (`pipelines.orchestration.experiment_copy`), so that only
    the models the experiment changed are registered there."""
    from pipelines.errors import KnownFailure
    from pipelines.orchestration.experiment_copy import copy_records_in

    try:
        copied = copy_records_in(Path.cwd(), params or Path("params.yaml"))
    except (KnownFailure, OSError):
        return  # the stage reports a bad params file itself; without the records, register runs
    if copied:
        typer.echo(
            f"copied the registration.json of {len(copied)} model{'s' * (len(copied) > 1)} from "
            "the project into this experiment's copy: register runs only for the models the "
            "experiment changed"
        )


def _stage_command(name: str, skip: Callable[..., bool] | None = None) -> Callable[..., None]:
    """The command of stage `name`, built from its plain function
    (`pipelines.orchestration.stages`): the first parameter (a dataset, or a model's NAME) is
    an argument, the others are options (`--data-dir`), paths given as paths, each with the
    help its `Annotated` text gives, and the function's docstring is the command's help.
    `skip(**arguments)`: runs first; true when the stage has nothing to do (no flow is
    started)."""
    from pipelines.orchestration import stages

    body = getattr(stages, name)
    parameters = []
    for i, p in enumerate(inspect.signature(body, eval_str=True).parameters.values()):
        if p.name == "step":
            continue
        kind, *texts = get_args(p.annotation) or (p.annotation,)
        if get_origin(p.annotation) is not Annotated:
            kind, texts = p.annotation, []
        help_ = texts[0] if texts else None
        if i == 0:
            info, kind = typer.Argument(..., help=help_), str
        elif p.name == "params":
            info, kind = typer.Option(Path(p.default), "--params", help="Params file."), Path
        elif p.default is None:
            info, kind = typer.Option(None, help=help_), Path | None
        else:
            info, kind = typer.Option(..., help=help_), Path
        cli_name = "name" if p.name == "model_name" else p.name  # shown as NAME
        parameters.append(
            inspect.Parameter(
                cli_name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind
            )
        )

    def command(**arguments: Any) -> None:
        if "name" in arguments:
            arguments["model_name"] = arguments.pop("name")
        _copy_records_in(arguments.get("params"))
        if skip is not None and skip(**arguments):
            return
        _call_stage(name, **{k: None if v is None else str(v) for k, v in arguments.items()})

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = body.__doc__
    command.__name__ = name
    return command


def _already_registered(model_name: str, model_dir: Path, out: Path, **_: Any) -> bool:
    """register's quick path: the model file is already a version that needs no verdict (its
    account is written to OUT); anything amiss is left to the full stage to report. The fresh
    process the full stage checks parity in is the stage server's spare when it has one ready
    (taken only if there is something to register); otherwise it is started first, so that its
    imports overlap this look-up and the flow's start (about 3 s off a registration)."""
    from pipelines.orchestration.stage_server import scorer_ready, take_scorer
    from pipelines.registry.tracking import fresh_process

    # The scorer's command line and environment as at the command's start (the look-up below
    # sets MLflow's variables), for the spare and a scorer started here alike.
    argv, env = list(fresh_process.FORKING_ARGV), fresh_process.scorer_env()
    spare_ready = scorer_ready(argv, env)
    if not spare_ready:
        fresh_process.start_scorer_ahead()
    from pipelines.model.training import MODEL_FILE
    from pipelines.registry.registration import account_of_known_file

    try:
        known = account_of_known_file(model_name, model_dir / MODEL_FILE, out) is not None
    except Exception:  # the full stage reports what is wrong
        known = False
    if known:
        fresh_process.stop_scorer_ahead()
    elif spare_ready:  # taken now (else one starts now); any other command may have taken it
        fresh_process.start_scorer_ahead(take_scorer(argv, env))
    return known


def _prepare_register_scorer(**_: Any) -> bool:
    """train's and evaluate's first step: have the stage server start, for the register stage
    after them, the fresh process that checks parity (unless it has one), so that its imports
    (about 4 s) overlap the training and DVC's work in between. Never skips the stage."""
    from pipelines.orchestration.stage_server import scorer_ready
    from pipelines.registry.tracking import fresh_process

    scorer_ready(list(fresh_process.FORKING_ARGV), fresh_process.scorer_env())
    return False


# One command per stage of the stage table, in pipeline order (`dvc.yaml` calls them).
STAGE_COMMANDS = tuple(stage.name for stage in STAGES)
_SERVER_ASKED: list[bool] = []  # whether this process has asked the stage server


def _run_in_stage_server() -> None:
    """A stage command: run it in a child of the preloaded stage server when one can stand in
    for this interpreter (its imports are paid once, not by each of the 31 stages), and exit
    with the child's status. Asks once per process."""
    if _SERVER_ASKED:
        return
    _SERVER_ASKED.append(True)
    # Before the stage server is asked: TensorFlow reads the variable at import, so it is part
    # of which server a command goes to, whether or not the user's shell sets it.
    _quiet_tensorflow()
    if sys.argv[1:2] and sys.argv[1] in STAGE_COMMANDS:
        from pipelines.orchestration.stage_server import run_in_server

        done = run_in_server("pipelines.cli", sys.argv[1:])
        if done is not None:
            raise SystemExit(done)


if __name__ == "__main__":  # pragma: no cover
    # `python -m pipelines.cli <stage>`, as dvc.yaml runs it: hand the command over before
    # the stage commands below are built (they import the config and its schemas, 0.1 s that
    # each stage's command would otherwise pay before it reaches the server).
    _run_in_stage_server()

_SKIPS: dict[str, Callable[..., bool]] = {
    "train": _prepare_register_scorer,
    "evaluate": _prepare_register_scorer,
    "register": _already_registered,
}
for _name in STAGE_COMMANDS:
    app.command(_name)(_stage_command(_name, skip=_SKIPS.get(_name)))


@app.command("check-params")
def check_params(params: Params = Path("params.yaml")) -> None:
    """Validate the params file (including every section dvc.yaml tracks), create any model's
    missing search folder (its train stage depends on it), and say what the file defines."""
    from pipelines.errors import ConfigError
    from pipelines.orchestration.project import check_params_file, create_search_folders

    try:
        cfg = check_params_file(params)
    except ConfigError as err:
        _fail(str(err))
    for folder in create_search_folders(cfg, params.parent):
        typer.echo(f"created {folder}/.gitkeep (train@{folder.parent.name} depends on it)")
    typer.echo(
        f"{params}: ok; datasets {list(cfg.datasets)}, models {list(cfg.models)}, "
        f"searches {list(cfg.search)}"
    )


@app.command("stage-code")
def stage_code(
    out_dir: Annotated[Path, typer.Option(help="Where each stage's file goes.")] = Path(
        ".stage-code"
    ),
) -> None:
    """Write each stage's code file (dvc.yaml's `code` stage): the `pipelines/` files its step
    imports, with their MD5s, in `md5sum`'s format."""
    from pipelines.errors import ConfigError
    from pipelines.orchestration.stage_code import write_digests

    try:
        counts = write_digests(Path.cwd(), out_dir)
    except ConfigError as err:
        _fail(str(err))
    typer.echo(
        f"{out_dir}: the code of {len(counts)} stages ("
        + ", ".join(f"{stage} {n} files" for stage, n in counts.items())
        + ")"
    )


@app.command("propose-suite")
def propose_suite(
    dataset: str,
    out: Path = typer.Option(..., help="Suite JSON to write."),
    data: str = typer.Option(None, help="Trusted reference file (default: the dataset's source)."),
    params: Params = Path("params.yaml"),
    force: bool = typer.Option(False, help="Overwrite an existing suite."),
) -> None:
    """Draft an expectation suite for DATASET (as defined in params) by profiling a trusted
    file. Review every bound, then commit it."""
    from pipelines.config import load_config
    from pipelines.data.datasets import load_dataset
    from pipelines.data.suite_drafting import propose_suite as draft
    from pipelines.errors import ConfigError, DataError

    if out.exists() and not force:
        _fail(f"{out} exists; review changes by hand or pass --force")
    try:
        cfg = load_config(params).dataset(dataset)
        if cfg.shards is not None:
            from pipelines.data.streaming import source_shards
            from pipelines.data.suite_drafting import propose_from_shards

            source = Path(data or cfg.source)
            suite = propose_from_shards(source_shards(source), dataset, cfg.label, str(source))
        else:
            suite = draft(
                load_dataset(cfg, data),
                dataset,
                cfg.label,
                data or cfg.source,
                cfg.modality,
                cfg.series.time_column if cfg.series else None,
            )
    except (ConfigError, DataError, ValueError) as err:
        _fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(suite, indent=2) + "\n")
    typer.echo(
        f"wrote a DRAFT suite with {len(suite['expectations'])} expectations to {out}; "
        "review every bound, then commit it"
    )


@app.command("synthesize-shards")
def synthesize_shards(
    out: Path = typer.Option(..., help="Folder to write part-NN.parquet files to."),
    shards: int = typer.Option(4, min=1, help="Number of shards."),
    rows_per_shard: int = typer.Option(1_000_000, min=1, help="Rows in each shard."),
    noise: float = typer.Option(0.01, min=0.0, help="Relative noise on every feature."),
) -> None:
    """Write a large tabular dataset made from the real breast-cancer rows (resampled, with
    multiplicative noise) as Parquet shards: a source for a `shards:` dataset."""
    from pipelines.data.datasets import load_source
    from pipelines.data.streaming import synthesize_shards as write

    base = load_source("sklearn:breast_cancer")
    paths = write(base, "target", out, shards, rows_per_shard, noise)
    typer.echo(f"{len(paths)} shard(s), {len(paths) * rows_per_shard:,} rows in {out}")


@app.command()
def parity(
    model_uri: str,
    data: Path = typer.Option(..., help="Raw test rows (Parquet)."),
    expected: Path = typer.Option(..., help="Pipeline predictions (.npy)."),
    tolerance: float = 1e-6,
) -> None:
    """Load MODEL_URI (e.g. models:/tabular-dnn@champion) in this fresh process and check that
    it reproduces the pipeline's predictions on raw rows."""
    import numpy as np
    import pandas as pd

    from pipelines.data.preprocessing import raw_inputs
    from pipelines.registry.promotion import parity_check
    from pipelines.registry.tracking.model_versions import load_pyfunc

    model = load_pyfunc(model_uri)
    meta = model.metadata.metadata
    x_raw = raw_inputs(pd.read_parquet(data), meta["features"], meta["input_shape"])
    got = np.asarray(model.predict(x_raw), dtype="float64")
    check = parity_check(model_uri, got, np.load(expected), tolerance, f"{len(x_raw)} raw rows")
    typer.echo(f"{model_uri}: {len(x_raw)} raw rows; {check.detail}")
    if not check.passed:
        _fail(f"{model_uri} does not reproduce the pipeline's predictions: {check.detail}")


@app.command()
def verify(
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION, e.g. tabular-dnn@champion"),
    lock: Path = typer.Option(Path("dvc.lock"), help="dvc.lock to compare the data hash with."),
) -> None:
    """Re-check a registered version: artifacts, training-data hash, golden-sample parity."""
    from pipelines.registry.serving import verify_version

    try:
        ok, problems = verify_version(ref, lock)
    except (ValueError, LookupError) as err:
        _fail(str(err))
    for line in ok:
        typer.echo(f"ok    {line}")
    for line in problems:
        typer.secho(f"FAIL  {line}", fg=typer.colors.RED)
    if problems:
        raise typer.Exit(code=1)


@app.command("ui-url")
def ui_url(port: int = 5000, params: Params = Path("params.yaml")) -> None:
    """Print the MLflow UI address of this project's training runs."""
    from pipelines.config import load_config
    from pipelines.errors import ConfigError
    from pipelines.registry.tracking import connection

    try:
        experiment = load_config(params).base.experiment
    except ConfigError as err:
        _fail(str(err))
    typer.echo(f"Training runs: {connection.ui_url(experiment, port=port)}")
    typer.echo(f"Validation runs: experiment {connection.data_experiment(experiment)}")


@app.command()
def promote(
    name: str = typer.Argument(..., help="The registered model (a key of `models:`)."),
    version: str = typer.Argument(..., help="The version to promote, e.g. a candidate."),
    data_dir: Path = typer.Option(
        None, help="Processed split to compare on (default: paths.processed/<dataset>)."
    ),
    without_comparison: bool = typer.Option(
        False,
        "--without-comparison",
        help="Leave out the champion comparison, for a deliberate schema change (other classes "
        "or features); recorded on the version and in its lineage.",
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Promote VERSION of NAME to @champion if it passes the gate again: thresholds,
    non-inferiority to the current champion on current test rows neither model trained on,
    fresh-process parity."""
    from pipelines.config import load_config
    from pipelines.errors import KnownFailure
    from pipelines.registry.promote import promote_version

    try:
        cfg = load_config(params)
        model = cfg.model(name)
        folder = data_dir or Path(cfg.paths.processed) / model.dataset
        promote_version(cfg, model, version, folder, without_comparison)
    except (KnownFailure, FileNotFoundError, LookupError) as err:
        _fail(str(err))


@app.command()
def rollback(name: str, params: Params = Path("params.yaml")) -> None:
    """Make NAME's previous champion the champion again (and the current one previous)."""
    from pipelines.config import load_config
    from pipelines.registry.tracking.aliases import rollback as swap
    from pipelines.registry.verdicts import refresh_registration_file

    try:
        champion, previous = swap(name)
    except LookupError as err:
        _fail(str(err))
    if params.is_file():
        refresh_registration_file(load_config(params), name)
    typer.echo(f"{name}: @champion -> version {champion}, @previous-champion -> version {previous}")


@app.command()
def score(
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION"),
    input: Path = typer.Option(..., "--input", help="Raw CSV or Parquet file."),
    chunk_rows: int = typer.Option(10_000, min=1),
) -> None:
    """Score a raw file; write <input>.predictions.parquet beside it."""
    from pipelines.errors import DataError
    from pipelines.registry.serving import score_file

    try:
        out = score_file(ref, input, chunk_rows)
    except (DataError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"wrote {out}")


@app.command()
def serve(
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION, e.g. tabular-dnn@champion"),
    host: str = "127.0.0.1",
    port: int = 5001,
) -> None:
    """Serve a registered model over HTTP with `mlflow models serve` (local environment)."""
    from pipelines.registry.serving import serve_command

    try:
        command, env = serve_command(ref, host, port)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"serving {ref} on http://{host}:{port}/invocations: {' '.join(command)}")
    os.execvpe(command[0], command, env)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            _fail(f"{what}: expected NAME=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


@app.command()
def retrain(
    model: list[str] = typer.Option(
        None, "--model", help="Model to retrain (repeat; default all)."
    ),
    source: list[str] = typer.Option(
        None, "--source", help="DATASET=PATH: train on a new file (recorded in params.yaml)."
    ),
    runner: str = typer.Option(None, help="sequential | threads | dask (default: params)."),
    push: bool = typer.Option(True, help="dvc push when a remote is configured."),
    params: Params = Path("params.yaml"),
) -> None:
    """Run the retraining flow now: the DVC stages as one Prefect flow, models side by side on
    the configured task runner, dvc.lock committed, data pushed, a summary artifact."""
    from pipelines.errors import ConfigError, OrchestrationError
    from pipelines.orchestration.prefect_server import ensure_api

    if runner not in (None, "sequential", "threads", "dask"):
        _fail(f"--runner: expected sequential, threads or dask, not {runner!r}")
    try:
        if not ensure_api():
            _fail("the retraining flow needs Prefect: unset PIPELINES_PREFECT=off")
        from pipelines.orchestration.retrain import retrain as flow

        result = flow(
            models=model or None,
            sources=_pairs(source or [], "--source") or None,
            runner=runner,
            push=push,
            params=str(params),
        )
    except (ConfigError, OrchestrationError, RuntimeError, KeyError) as err:
        _fail(str(err))
    typer.echo(json.dumps(result, indent=2))


@app.command()
def deploy(
    name: str = typer.Option("scheduled", help="Deployment name."),
    params: Params = Path("params.yaml"),
) -> None:
    """Create (or update) the scheduled retraining deployment on the Prefect server in
    PREFECT_API_URL (or the local one): cron, timezone and work pool from params.yaml
    `orchestration`. Start a worker with `prefect worker start --pool <work_pool>`."""
    from pipelines.config import load_config
    from pipelines.errors import ConfigError, OrchestrationError
    from pipelines.orchestration.prefect_server import ensure_api

    try:
        cfg = load_config(params)
        api = ensure_api()
    except (ConfigError, OrchestrationError) as err:
        _fail(str(err))
    if not api:
        _fail("a deployment needs a Prefect server: unset PIPELINES_PREFECT=off")
    from pipelines.orchestration.project import deploy_retraining

    deployment_id = deploy_retraining(cfg, name, params)
    orch = cfg.orchestration
    typer.echo(
        f"deployment retrain/{name} ({deployment_id}) on work pool {orch.work_pool!r}, "
        f"schedule {orch.schedule!r} ({orch.timezone}); start a worker: "
        f"prefect worker start --pool {orch.work_pool}; run now: "
        f"prefect deployment run retrain/{name} --watch"
    )


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (or reuse a running one) and print its API URL."""
    from pipelines.orchestration.prefect_server import ensure_api

    typer.echo(ensure_api() or "PIPELINES_PREFECT=off: no server needed")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by this package."""
    from pipelines.orchestration.prefect_server import stop_local_server

    typer.echo("stopped" if stop_local_server() else "no server started by pipelines")


@stage_server_app.command("stop")
def stage_server_stop() -> None:
    """Stop this environment's stage server (the next stage command starts it again; set
    PIPELINES_STAGE_SERVER=off to run every stage in a fresh interpreter)."""
    from pipelines.orchestration.stage_server import stop_server

    typer.echo("stopped" if stop_server() else "no stage server running")


def _exit_status(code: object) -> int:
    """The status Python exits with for `SystemExit(code)`."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _end_without_teardown(status: list[int]) -> None:
    """The process's last exit step. Python has joined its threads and run every other exit
    handler by now (Prefect's and MLflow's flushes among them); what is left is the teardown of
    every imported module, 1.5 to 2 s once TensorFlow is loaded, and nothing in it writes a
    result. Flush the logs and the standard streams, and end here with the same status."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status[0])


def main() -> None:  # pragma: no cover
    _run_in_stage_server()  # `pipelines <stage>` (the console script) asks here
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    status = [1]  # an exception that escapes: its traceback, then status 1, as Python does
    # Registered first, so it runs last of the exit handlers registered from here on.
    atexit.register(_end_without_teardown, status)
    try:
        app()
        status[0] = 0
    except SystemExit as done:
        status[0] = _exit_status(done.code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
