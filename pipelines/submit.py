"""`python -m pipelines submit`: compile the pipeline for a cluster profile and start a run on Kubeflow Pipelines.

The run goes through the ``kfp`` client (``kfp.Client``) to the KFP v2beta1 REST API: the compiled pipeline
spec travels inline with the run (no upload), into an experiment found or created by name. Where and as whom
come from the environment, never from code or the command line (tokens do not belong in a shell history):

- ``KFP_HOST``: the API endpoint, e.g. ``https://kubeflow.example.com/pipeline`` (or ``--host``);
- ``KFP_NAMESPACE``: the Kubeflow profile namespace of a multi-user installation (or ``--namespace``);
- ``KFP_TOKEN``: a bearer token, or ``KF_PIPELINES_SA_TOKEN_PATH``: a file holding one (a projected
  ServiceAccount token), or ``KFP_COOKIE``: a session cookie (``authservice_session=…``) from the browser;
- ``KFP_SERVICE_ACCOUNT``: the ServiceAccount the run's pods use (manifests/ creates ``bert-pipeline``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.profiles import DEFAULT_PROFILE

HEALTHZ = "/apis/v2beta1/healthz"
ENV_HOST, ENV_NAMESPACE, ENV_SERVICE_ACCOUNT = "KFP_HOST", "KFP_NAMESPACE", "KFP_SERVICE_ACCOUNT"
ENV_TOKEN, ENV_TOKEN_PATH, ENV_COOKIE = "KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KFP_COOKIE"
#: Where the kfp client looks for a UI address for links (its own variable).
ENV_UI = "KF_PIPELINES_UI_ENDPOINT"


class SubmitError(RuntimeError):
    """The run could not be started: the message names the cause and the fix."""


@dataclass(frozen=True)
class SubmitConfig:
    """Where and how `python -m pipelines submit` starts a run (the pipeline's own parameters come apart)."""

    profile: str = field(
        default=DEFAULT_PROFILE,
        metadata={"help": "Cluster profile to compile for: onprem, eks, cpu, or one of --profiles-file."},
    )
    profiles_file: str = field(default="", metadata={"help": "Profiles YAML; empty: pipelines/profiles.yaml."})
    package: str = field(
        default="", metadata={"help": "Where the compiled YAML goes; empty: build/pipeline-kfp-<profile>.yaml."}
    )
    host: str = field(
        default="",
        metadata={"help": f"KFP API endpoint (https://<kubeflow>/pipeline); empty: ${ENV_HOST}."},
    )
    namespace: str = field(
        default="", metadata={"help": f"Kubeflow profile namespace (multi-user KFP); empty: ${ENV_NAMESPACE}."}
    )
    experiment: str = field(
        default="review-sentiment", metadata={"help": "Experiment the run goes into (made if new)."}
    )
    run_name: str = field(default="", metadata={"help": "Run name; empty: review-sentiment <profile> <UTC time>."})
    service_account: str = field(
        default="",
        metadata={
            "help": f"ServiceAccount the run's pods use (manifests/: bert-pipeline); empty: ${ENV_SERVICE_ACCOUNT}, "
            "else the profile's service_account, else the installation's default."
        },
    )
    cache: bool = field(default=True, metadata={"help": "Reuse cached step results (--no-cache: run every step)."})
    timeout_seconds: int = field(
        default=30, metadata={"help": "How long the health check waits for the KFP endpoint to answer.", "min": 1}
    )


@dataclass(frozen=True)
class Connection:
    """How to reach the KFP API: endpoint, namespace and credentials (from `from_env`)."""

    host: str
    namespace: str = ""
    token: str = ""
    cookie: str = ""
    ui_host: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], host: str = "", namespace: str = "") -> Connection:
        """The connection that ``--host``/``--namespace`` and the environment describe.

        Raises:
            ValueError: bad input: no endpoint, one that is not an http(s) URL, or a token file that cannot be read.
        """
        from urllib.parse import urlsplit

        host = (host or env.get(ENV_HOST, "")).strip().rstrip("/")
        if not host:
            raise ValueError(f"no KFP endpoint: set {ENV_HOST} (e.g. https://kubeflow.example.com/pipeline) or --host")
        if "://" not in host:
            raise ValueError(f"KFP endpoint {host!r} has no scheme: write http://{host} or https://{host}")
        parts = urlsplit(host)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"KFP endpoint {host!r} is not an http(s) URL with a host, e.g. https://kubeflow.example.com/pipeline"
            )
        token = env.get(ENV_TOKEN, "").strip()
        path = env.get(ENV_TOKEN_PATH, "").strip()
        if not token and path:
            try:
                token = Path(path).read_text().strip()
            except OSError as error:
                raise ValueError(f"{ENV_TOKEN_PATH}={path}: cannot read the token ({error.strerror})") from None
        return cls(
            host=host,
            namespace=(namespace or env.get(ENV_NAMESPACE, "")).strip(),
            token=token,
            cookie=env.get(ENV_COOKIE, "").strip(),
            ui_host=env.get(ENV_UI, "").strip().rstrip("/"),
        )

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.cookie:
            headers["Cookie"] = self.cookie
        return headers

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_host or self.host}/#/runs/details/{run_id}"


@dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    run_name: str
    experiment_id: str
    url: str
    package: Path
    arguments: dict[str, Any]


def _auth_hint(connection: Connection) -> str:
    given = [name for name, value in ((ENV_TOKEN, connection.token), (ENV_COOKIE, connection.cookie)) if value]
    if not given:
        return f"no credentials were sent: set {ENV_TOKEN} (or {ENV_TOKEN_PATH}) or {ENV_COOKIE}"
    return f"check {' / '.join(given)} (expired? for namespace {connection.namespace or '(none)'}?)"


def _refused(status: int, connection: Connection, what: str) -> SubmitError:
    if status == 401:
        return SubmitError(f"KFP at {connection.host} refused {what} (401 Unauthorized): {_auth_hint(connection)}")
    return SubmitError(
        f"KFP at {connection.host} refused {what} (403 Forbidden): the credentials are not allowed there; "
        f"{_auth_hint(connection)}, and that the namespace is yours (KFP_NAMESPACE)"
    )


def check_server(connection: Connection, timeout_s: float = 30) -> dict[str, Any]:
    """Ask the endpoint's healthz, with the credentials, and return its answer.

    Raises:
        SubmitError: unreachable, 401/403, or not a KFP API (a login page, a wrong path).
    """
    url = connection.host + HEALTHZ
    request = urllib.request.Request(url, headers=connection.headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise _refused(error.code, connection, "the health check") from None
        raise SubmitError(
            f"KFP at {connection.host} answered {error.code} on {HEALTHZ}: is {ENV_HOST} the KFP API endpoint "
            "(on Kubeflow: https://<host>/pipeline)?"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise SubmitError(
            f"KFP at {connection.host} is unreachable ({reason}): check {ENV_HOST}, the network or "
            "`kubectl port-forward`"
        ) from None
    try:
        answer: dict[str, Any] = json.loads(body)
    except ValueError:
        raise SubmitError(
            f"{url} did not answer as the KFP API (no JSON; a login page?): check {ENV_HOST}, and log in with "
            f"{ENV_COOKIE} or {ENV_TOKEN}"
        ) from None
    if answer.get("multi_user") and not connection.namespace:
        raise SubmitError(f"KFP at {connection.host} is multi-user: set {ENV_NAMESPACE} to your profile namespace")
    return answer


def _parameter_value(name: str, kind: str, text: Any) -> Any:
    """A ``--param`` value (text) as the pipeline parameter's type."""
    if not isinstance(text, str):
        return text
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind in ("STRUCT", "LIST"):
            return json.loads(text)
    except ValueError:
        raise ValueError(f"--param {name}={text!r}: the pipeline's {name} is {kind}") from None
    return text


def pipeline_arguments(package: Path, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` checked against the compiled pipeline's parameters and typed as they are.

    Raises:
        ValueError: an unknown parameter (the known ones listed), a value of the wrong type or one a step
            refuses (naming its flag), or a required parameter (no default) missing.
    """
    import yaml

    from components.common import options
    from components.common.training_options import TrainingArguments
    from pipelines import parameters

    spec = next(yaml.safe_load_all(package.read_text()))
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"the pipeline has no parameter {', '.join(unknown)}; it has {', '.join(sorted(declared))}")
    missing = [n for n, d in declared.items() if n not in given and "defaultValue" not in d and not d.get("isOptional")]
    if missing:
        flags = ", ".join("--data" if n == "data" else f"--param {n}=..." for n in missing)
        raise ValueError(f"the pipeline needs {', '.join(missing)}: give {flags}")
    typed = {name: _parameter_value(name, declared[name]["parameterType"], value) for name, value in given.items()}
    defaults = {name: d["defaultValue"] for name, d in declared.items() if "defaultValue" in d}
    # Each option's bounds and choices, on what the run will get, before sending it. (Not the steps' own
    # validate(): some look at this machine, e.g. the feature store's environment, which the pods set.)
    values = {name: value for name, value in {**defaults, **typed}.items() if name in parameters.DECLARED_IN}
    extra = {TrainingArguments: {"output_dir": "checkpoints"}}
    for cls in dict.fromkeys(cls for cls, _ in parameters.DECLARED_IN.values()):
        options.check_fields(parameters.config(cls, values, **extra.get(cls, {})))
    parameters.check_unused(values, given=set(typed))
    return typed


def _create_run(connection: Connection, config: SubmitConfig, package: Path, arguments: dict[str, Any], name: str):
    import kfp
    from kfp_server_api.exceptions import ApiException

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        client = kfp.Client(
            host=connection.host,
            existing_token=connection.token or None,
            cookies=connection.cookie or None,
            **({"namespace": connection.namespace} if connection.namespace else {}),
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the client prints its own links; ours is one line
            return client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=name,
                experiment_name=config.experiment,
                namespace=connection.namespace or None,
                enable_caching=None if config.cache else False,
                service_account=config.service_account or None,
            )
    except ApiException as error:
        if error.status in (401, 403):
            raise _refused(error.status, connection, "the run") from None
        detail = " ".join(str(error.body or error.reason).split())[:400]
        raise SubmitError(f"KFP at {connection.host} did not start the run ({error.status}): {detail}") from None
    except OSError as error:  # urllib3 gave up on the connection
        raise SubmitError(f"KFP at {connection.host} became unreachable while starting the run: {error}") from None


def submit(config: SubmitConfig, arguments: Mapping[str, Any], env: Mapping[str, str] | None = None) -> SubmittedRun:
    """Compile for ``config.profile``, check the endpoint, and start one run of the pipeline.

    Args:
        config: Profile, experiment, run name, service account, endpoint overrides.
        arguments: Pipeline parameters by name (``data`` and any other); unknown names are refused.
        env: The environment to read the endpoint and credentials from (default: ``os.environ``).

    Raises:
        ValueError: bad input (endpoint, token file, profiles file, profile, parameters) — nothing was sent.
        SubmitError: the endpoint is unreachable, refuses the credentials, or refuses the run.
    """
    from pipelines.compile import compile_pipeline
    from pipelines.profiles import DEFAULT_FILE, load_profiles

    env = os.environ if env is None else env
    connection = Connection.from_env(env, host=config.host, namespace=config.namespace)
    profile = load_profiles(config.profiles_file or DEFAULT_FILE).get(config.profile)
    fallback = env.get(ENV_SERVICE_ACCOUNT, "") or (profile.service_account if profile else "")
    config = config if config.service_account else _with(config, service_account=fallback)
    package = Path(config.package or Path("build") / f"pipeline-kfp-{config.profile}.yaml")
    compile_pipeline(package, target="kfp", profile=config.profile, profiles_file=config.profiles_file or DEFAULT_FILE)
    typed = pipeline_arguments(package, arguments)
    check_server(connection, timeout_s=config.timeout_seconds)
    name = config.run_name or f"review-sentiment {config.profile} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
    result = _create_run(connection, config, package, typed, name)
    run_id = result.run_id
    return SubmittedRun(run_id, name, result.run_info.experiment_id, connection.run_url(run_id), package, typed)


def _with(config: SubmitConfig, **changes: Any) -> SubmitConfig:
    from dataclasses import replace

    return replace(config, **changes)


# --- the command line (`python -m pipelines submit`) ----------------------------------------------------------


def add_subcommand(sub: Any) -> None:
    """Add ``submit`` to the subcommands of ``python -m pipelines``: `SubmitConfig`'s flags, ``--data``,
    ``--param NAME=VALUE`` and the run flags of every step option (sent only when given)."""

    from components.common import options
    from pipelines import parameters

    parser = sub.add_parser(
        "submit",
        help="compile for a cluster profile and start a run on Kubeflow Pipelines (KFP_HOST, KFP_TOKEN, ...)",
        description=__doc__.split("\n\n")[0] + " See docs/cluster.md.",
        formatter_class=options.DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", help="the reviews as the cluster's pods see them: a URI (s3://, gs://, ...) or a path on a PVC"
    )
    parser.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="any parameter of the compiled pipeline (repeatable), typed as the pipeline declares it",
    )
    options.add_arguments(parser, SubmitConfig)
    parameters.add_run_flags(parser)
    # Step options go to the run only when given: the compiled pipeline (and its profile) holds the defaults.
    # None marks "not given" (no option parses to None; --help then shows no default), as `run_subcommand` reads.
    parser.set_defaults(**dict.fromkeys(parameters.DECLARED_IN))


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {item!r}: write NAME=VALUE (e.g. --param checkpoint_root=/mnt/ckpt)")
        pairs[name.strip().replace("-", "_")] = value
    return pairs


def run_subcommand(args: Any) -> int:
    """``python -m pipelines submit``: 0 when the run started (its URL printed), 2 on bad input, 1 when KFP
    could not be reached or refused."""
    import dataclasses
    import sys

    from components.common import options
    from pipelines import parameters

    values = {name: getattr(args, name) for name in parameters.DECLARED_IN if getattr(args, name, None) is not None}
    try:
        given: dict[str, Any] = {**values, **({"data": args.data} if args.data else {}), **_pairs(args.param or [])}
        config = options.from_mapping(
            SubmitConfig, {f.name: getattr(args, f.name) for f in dataclasses.fields(SubmitConfig)}
        )
        run = submit(config, given)
    except ValueError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except SubmitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Compiled pipeline: {run.package}")
    print(f"Started run {run.run_name!r} ({run.run_id}): {run.url}")
    from pipelines.compile import local_images_warning

    warning = local_images_warning(run.package)
    if warning:
        print(warning, file=sys.stderr)
    return 0
