"""SageMaker's training contract for a bring-your-own container: what ``train`` does on the train image.

SageMaker starts a training job's container as ``docker run IMAGE train``; `images/train` (``/opt/venv/bin/train``
in the image) runs ``python -m components.sagemaker.train_entry``.  A bare container gets no ``SM_*`` variables:
everything is read from SageMaker's files under the root (``/opt/ml``; ``$SAGEMAKER_BASE_DIR``, the variable
SageMaker's own training toolkit reads, or ``--root`` elsewhere, e.g. in tests)::

    input/config/hyperparameters.json   the training options by name, every value a string (`parse_hyperparameters`)
    input/config/inputdataconfig.json   the channels: train and validation (File or FastFile mode)
    input/config/resourceconfig.json    current_host, hosts, network_interface_name (absent: one host)
    input/data/<channel>/**.parquet     the splits, as `components.sagemaker.channels` wrote them
    model/                              the model directory the train step writes (`training.model_dir`)
    checkpoints/                        CheckpointConfig's local path: Trainer's checkpoints, resumed from
    output/data/training_report.json    the training report (SageMaker uploads output/data as output.tar.gz)
    output/failure                      on an error: the reason, first line (FailureReason: its first 1,024 chars)

The training is the train step's own (`components.train.step.run`: `core.train` on transformers.Trainer, the same
progress and metric lines, which the job's MetricDefinitions read; `components.sagemaker.requests`), on the
channels' rows, without MLflow (the pipeline's evaluate and deploy steps log the model).  The model goes to
``model/`` only when training completes; checkpoints go to ``checkpoints/`` as training goes, and a container
restarted with them (a spot interruption: SageMaker copies them back) resumes where they end.

Several hosts (``InstanceCount`` > 1) or GPUs: this process starts ``torchrun`` (`torchrun_command`: one node per
host, ``node_rank`` the host's index, ``master_addr`` the first host, port 29500; one process per GPU), which runs
this module again in each process.  SIGTERM (StopTrainingJob, a spot interruption: 120 s before SIGKILL) is passed
on to torchrun; each training process saves a checkpoint after its current step and stops
(`components.train.callbacks.SignalStop`), and ``train`` exits 143 without a failure file.

Exit codes: 0 trained; 2 bad input (a hyperparameter, a channel, a config file), 1 any other error — both with
``output/failure``; 143 stopped by SIGTERM after a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from components.common import options
from components.common.logs import configure_logging
from components.sagemaker.requests import CHANNELS, NOT_HYPERPARAMETERS

log = logging.getLogger("components.sagemaker.train")

ROOT_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_ROOT = "/opt/ml"
MODULE = "components.sagemaker.train_entry"
#: torchrun's rendezvous port on the first host.
MASTER_PORT = 29500
#: Hyperparameters SageMaker and its SDK add (``_tuning_objective_metric``, ``sagemaker_program``, …): ignored.
RESERVED_PREFIXES = ("_", "sagemaker_")
#: Input modes whose channel is a directory of files (Pipe mode gives a FIFO per epoch instead).
FILE_MODES = ("File", "FastFile")
#: How many characters of ``output/failure`` SageMaker shows as the job's FailureReason.
FAILURE_REASON_CHARS = 1024
EXIT_BAD_INPUT, EXIT_ERROR, EXIT_SIGTERM = 2, 1, 128 + signal.SIGTERM


class ContractError(ValueError):
    """A file of SageMaker's contract that this container cannot use (one line, naming the file or the key)."""


@dataclass(frozen=True)
class Paths:
    """SageMaker's directories under one root (``/opt/ml``)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "input" / "config"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def report(self) -> Path:
        return self.root / "output" / "data" / "training_report.json"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


@dataclass(frozen=True)
class Resources:
    """resourceconfig.json: this host and all hosts of the job (sorted as SageMaker lists them)."""

    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    network_interface_name: str = ""

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)


@dataclass
class Job:
    """What the contract's files say: the training options, the ignored keys and the hosts."""

    values: dict[str, Any]
    ignored: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)


def root_path(flag: str = "") -> Path:
    """The root: ``--root``, else ``$SAGEMAKER_BASE_DIR``, else ``/opt/ml``."""
    return Path(flag or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def _read_json(path: Path, required: bool = True) -> Any:
    if not path.is_file():
        if not required:
            return None
        raise ContractError(f"{path} is missing: SageMaker writes it before `train` starts")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ContractError(f"{path} is not readable JSON: {error}") from None


def _option_classes() -> dict[str, type]:
    """Each training option's dataclass, by option name (the training CLI's own declarations)."""
    from components.common.training_options import ARGUMENT_CLASSES

    return {f.name: cls for cls in ARGUMENT_CLASSES for f in fields(cls)}


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ContractError(f"hyperparameter {name}: {value!r} is not a string (SageMaker gives every value as text)")


def _unquote(text: str) -> str:
    """SageMaker's tuning gives a categorical value as a JSON string (``"cosine"`` with the quotes)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def parse_value(cls: type, name: str, text: str) -> Any:
    """One hyperparameter's text as its training option's type, checked against the option's bounds and choices.

    Raises:
        ContractError: ``hyperparameter <name> …``: not of the option's type, out of bounds, not a choice.
    """
    where = f"hyperparameter {name}"
    kind, _ = options.value_type(cls, name)
    text = _unquote(text.strip())
    if kind is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ContractError(f"{where} must be true or false, got {text!r}")
        value: Any = lowered in ("true", "1", "yes")
    elif kind is int:
        try:
            value = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if not number.is_integer():
                raise ContractError(f"{where} must be a whole number, got {text!r}") from None
            value = int(number)
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ContractError(f"{where} must be a number, got {text!r}") from None
    else:
        value = text
    try:
        options.check_value(cls, name, value, shown=where)
    except ValueError as error:
        raise ContractError(str(error)) from None
    return value


def parse_hyperparameters(hyperparameters: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(training option values by name, the keys ignored) of hyperparameters.json.

    Names are the training options' (``learning_rate``, ``max_seq_length``, …: what
    `components.sagemaker.requests.hyperparameters` sends); keys SageMaker or its SDK add (`RESERVED_PREFIXES`:
    ``_tuning_objective_metric``, ``sagemaker_*``) are ignored.

    Raises:
        ContractError: A key that is no training option (listing the valid ones), one the container sets itself
            (where data and outputs are), or a value the option refuses.
    """
    classes = _option_classes()
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for name, raw in hyperparameters.items():
        if name.startswith(RESERVED_PREFIXES):
            ignored.append(name)
        elif name in NOT_HYPERPARAMETERS:
            raise ContractError(
                f"hyperparameter {name}: the container sets it itself (its data, model and checkpoints are under "
                "/opt/ml); remove it"
            )
        elif name not in classes:
            valid = ", ".join(sorted(set(classes) - NOT_HYPERPARAMETERS))
            raise ContractError(f"hyperparameter {name} is no training option; valid: {valid}")
        else:
            values[name] = parse_value(classes[name], name, _text(name, raw))
    return values, ignored


def read_resources(paths: Paths) -> Resources:
    """resourceconfig.json (absent: one host, e.g. a local run of the container).

    Raises:
        ContractError: No ``hosts`` list, or ``current_host`` not among them.
    """
    where = paths.config / "resourceconfig.json"
    body = _read_json(where, required=False)
    if body is None:
        return Resources()
    hosts = body.get("hosts")
    current = body.get("current_host")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ContractError(f"{where}: 'hosts' must be a list of host names, got {hosts!r}")
    if current not in hosts:
        raise ContractError(f"{where}: current_host {current!r} is not among hosts {hosts}")
    return Resources(current, tuple(hosts), str(body.get("network_interface_name") or ""))


def channel_files(paths: Paths) -> dict[str, list[Path]]:
    """The Parquet files of the train and validation channels (inputdataconfig.json and input/data/<channel>/).

    Raises:
        ContractError: A channel missing from inputdataconfig.json, not in File or FastFile mode, or without a
            Parquet file.
    """
    where = paths.config / "inputdataconfig.json"
    declared = _read_json(where)
    if not isinstance(declared, dict):
        raise ContractError(f"{where}: expected an object of channels, got {type(declared).__name__}")
    found: dict[str, list[Path]] = {}
    for name in CHANNELS:
        if name not in declared:
            raise ContractError(
                f"{where} has no {name!r} channel (it has {', '.join(sorted(declared)) or 'none'}); the training "
                f"job needs the channels {' and '.join(CHANNELS)}"
            )
        mode = (declared[name] or {}).get("TrainingInputMode", "File")
        if mode not in FILE_MODES:
            raise ContractError(f"channel {name}: TrainingInputMode {mode!r}; this image reads File or FastFile")
        files = sorted(p for p in paths.channel(name).rglob("*.parquet") if p.is_file())
        if not files:
            raise ContractError(f"channel {name}: no .parquet file under {paths.channel(name)}")
        found[name] = files
    return found


def read_job(paths: Paths) -> Job:
    """The contract's config files, checked (nothing is written).

    Raises:
        ContractError: See `parse_hyperparameters`, `channel_files`, `read_resources`.
    """
    hyperparameters = _read_json(paths.config / "hyperparameters.json")
    if not isinstance(hyperparameters, dict):
        raise ContractError(f"{paths.config / 'hyperparameters.json'}: expected an object of name: value")
    values, ignored = parse_hyperparameters(hyperparameters)
    channel_files(paths)
    return Job(values, ignored, read_resources(paths))


def write_features(files: Mapping[str, Sequence[Path]], destination: Path) -> Path:
    """The channels' rows as one features Parquet with a ``split`` column (the channel's name), as the training
    CLI's ``--features`` reads it.

    Raises:
        ContractError: A file that is not Parquet, or a channel without rows.
    """
    import pandas as pd

    from components.common import features as F

    frames = []
    for channel, paths in files.items():
        try:
            frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
        except (OSError, ValueError) as error:
            raise ContractError(f"channel {channel}: cannot read its Parquet files: {error}") from None
        if frame.empty:
            raise ContractError(f"channel {channel} has no rows")
        frames.append(frame.assign(**{F.SPLIT: channel}))
    destination.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_parquet(destination, index=False)
    return destination


def training_values(job: Job, paths: Paths, features: Path, model_dir: Path) -> dict[str, Any]:
    """The training options of the run: the hyperparameters, and where data and outputs are (no MLflow)."""
    return {
        **job.values,
        "features": str(features),
        "output_dir": str(paths.checkpoints),
        "model_dir": str(model_dir),
        "report": str(paths.report),
        "mlflow": False,
    }


def torchrun_command(resources: Resources, nproc_per_node: int, root: Path) -> list[str]:
    """torchrun over the job's hosts, running this module in each process (one per GPU, or one)."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if len(resources.hosts) == 1:
        command.append("--standalone")
    else:
        command += [
            f"--nnodes={len(resources.hosts)}",
            f"--node_rank={resources.node_rank}",
            f"--master_addr={resources.hosts[0]}",
            f"--master_port={MASTER_PORT}",
        ]
    return [*command, f"--nproc_per_node={nproc_per_node}", "-m", MODULE, "--root", str(root)]


def torchrun_environment(resources: Resources, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of torchrun: NCCL's and Gloo's sockets on SageMaker's network interface, when named."""
    env = dict(environ)
    if resources.network_interface_name:
        env.setdefault("NCCL_SOCKET_IFNAME", resources.network_interface_name)
        env.setdefault("GLOO_SOCKET_IFNAME", resources.network_interface_name)
    return env


def publish_model(staged: Path, destination: Path) -> list[str]:
    """Move the model directory's files into ``destination`` (emptied first; the directory itself stays: on
    SageMaker it may be a mount point)."""
    destination.mkdir(parents=True, exist_ok=True)
    for old in destination.iterdir():
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    for item in sorted(staged.iterdir()):
        shutil.move(str(item), str(destination / item.name))
    return sorted(p.name for p in destination.iterdir())


def train_here(paths: Paths, job: Job) -> None:
    """Train in this process (alone, or as one of torchrun's); the global rank 0 publishes the model."""
    from components.common.training_options import split_options
    from components.train import step

    with tempfile.TemporaryDirectory(prefix="sagemaker-train-") as work:
        features = write_features(channel_files(paths), Path(work) / "features.parquet")
        staged = Path(work) / "model"
        values = training_values(job, paths, features, staged)
        result = step.run(*split_options(values))
        if int(os.environ.get("RANK", 0)) == 0:
            files = publish_model(staged, paths.model)
            log.info("model written to %s: %s (stop reason %s)", paths.model, ", ".join(files), result.stop_reason)


def _launch(command: list[str], env: Mapping[str, str]) -> tuple[int, bool]:
    """Run torchrun; SIGTERM to this process goes on to it.  (exit code, whether SIGTERM came)."""
    terminated = {"yes": False}
    process = subprocess.Popen(command, env=dict(env))

    def forward(number: int, frame: Any) -> None:
        terminated["yes"] = True
        process.send_signal(number)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait(), terminated["yes"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_failure(paths: Paths, reason: str, detail: str = "") -> None:
    """``output/failure``: the one-line reason first (SageMaker's FailureReason is the first 1,024 characters);
    kept when another process of the job wrote one first."""
    line = " ".join(reason.split())
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    try:
        with paths.failure.open("x") as out:
            out.write(line + "\n" + (f"\n{detail}" if detail else ""))
    except FileExistsError:
        pass


def run(paths: Paths) -> int:
    """The contract: read and check the files, train (here or under torchrun), publish the model; an exit code.

    Raises:
        ContractError, ValueError: Bad input (nothing trained).
        components.train.callbacks.Interrupted: SIGTERM stopped training after a checkpoint.
    """
    from components.train import cli

    job = read_job(paths)
    if job.ignored:
        log.info("hyperparameters ignored (SageMaker's own): %s", ", ".join(sorted(job.ignored)))
    io, _, _, args, health = cli.split_options(training_values(job, paths, Path("features"), paths.model))
    args.validate()
    health.validate()
    if "WORLD_SIZE" in os.environ:  # one of torchrun's processes
        train_here(paths, job)
        return 0
    nproc = cli.processes(io, args)
    if len(job.resources.hosts) == 1 and nproc == 1:
        train_here(paths, job)
        return 0
    command = torchrun_command(job.resources, nproc, paths.root)
    log.info("host %s of %s: %s", job.resources.current_host, ", ".join(job.resources.hosts), " ".join(command))
    code, terminated = _launch(command, torchrun_environment(job.resources, os.environ))
    if terminated:
        return EXIT_SIGTERM
    if code:
        nodes = len(job.resources.hosts)
        write_failure(
            paths,
            f"torchrun ({nodes} host(s) x {nproc} process(es)) failed with exit code {code} on "
            f"{job.resources.current_host}; its processes' errors are in the log",
        )
        return code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``train``: 0 trained, 2 bad input, 1 another error (both with output/failure), 143 stopped by SIGTERM."""
    parser = options.OneLineParser(prog="train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default="", help=f"SageMaker's root directory (default ${ROOT_ENV} or {DEFAULT_ROOT})"
    )
    arguments = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_logging()
    paths = Paths(root_path(arguments.root))
    from components.train.callbacks import Interrupted

    try:
        return run(paths)
    except Interrupted as stopped:
        log.warning("%s", stopped)
        return EXIT_SIGTERM
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        write_failure(paths, f"error: {error}")
        return EXIT_BAD_INPUT
    except Exception as error:
        detail = traceback.format_exc()
        print(detail, file=sys.stderr, flush=True)
        write_failure(paths, f"{type(error).__name__}: {error}", detail[-4000:])
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
