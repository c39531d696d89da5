"""A throw-away kube-apiserver (plus etcd) on free loopback ports, for the tests in tests/k8s.

The binaries come from ``hack/k8s/build-apiserver.sh`` (``make k8s-apiserver``). Nothing here runs
at import time; :func:`running_apiserver` starts both processes and always stops them again.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUILD_HINT = (
    "run `make k8s-apiserver` (hack/k8s/build-apiserver.sh) to build kube-apiserver and etcd "
    "into $K8S_TEST_CACHE (default ~/.cache/bert-kfp-k8s), or set K8S_TEST_KUBECONFIG to use "
    "a real cluster"
)
ADMIN_USER = "admin"
UNPRIVILEGED_USER = "bert-kfp-tester"
ADMIN_CONTEXT = "admin"
UNPRIVILEGED_CONTEXT = "unprivileged"
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 15.0


class ApiServerError(RuntimeError):
    """The local etcd or kube-apiserver did not start (message carries the log's tail)."""


@dataclass(frozen=True)
class Binaries:
    apiserver: Path
    etcd: Path


def cache_dir() -> Path:
    return Path(os.environ.get("K8S_TEST_CACHE") or Path.home() / ".cache" / "bert-kfp-k8s")


def find_binaries() -> Binaries | None:
    """The binaries built by hack/k8s/build-apiserver.sh, or None when they are not there."""
    bin_dir = cache_dir() / "bin"
    binaries = Binaries(apiserver=bin_dir / "kube-apiserver", etcd=bin_dir / "etcd")
    if all(os.access(path, os.X_OK) for path in (binaries.apiserver, binaries.etcd)):
        return binaries
    return None


@dataclass(frozen=True)
class LocalApiServer:
    """A started server: where it listens and how to reach it as the admin or unprivileged user."""

    url: str
    ca_file: Path
    kubeconfig: Path
    admin_token: str
    unprivileged_token: str
    pids: tuple[int, ...]


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out as free on 127.0.0.1 (all held until all are picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _die_with_parent() -> None:
    """Child-side: get SIGTERM when the test process dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Processes:
    """The started processes, stopped in reverse order; stop() verifies that their PIDs are gone."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        with log_file.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches pytest, which then stops us in order
                preexec_fn=_die_with_parent,
            )
        self._procs.append((name, proc))
        log.info("started %s (pid %d)", name, proc.pid)
        return proc

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(proc.pid for _, proc in self._procs)

    def stop(self) -> None:
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
                    proc.kill()
                    proc.wait()
        leftover = [f"{name} (pid {proc.pid})" for name, proc in self._procs if _pid_alive(proc.pid)]
        self._procs.clear()
        if leftover:
            raise ApiServerError(f"processes still running after stop: {', '.join(leftover)}")


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log_file: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ApiServerError(
                f"{what} exited with code {proc.returncode} while starting; log {log_file}:\n" + _tail(log_file)
            )
        if ready():
            return
        time.sleep(0.25)
    raise ApiServerError(f"{what} not ready after {timeout:.0f} s; log {log_file}:\n" + _tail(log_file))


def _http_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except OSError:  # refused, reset, TLS not up yet, HTTP errors (URLError is an OSError)
        return False


def _service_account_key(path: Path) -> None:
    try:
        subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    except FileNotFoundError as exc:
        raise ApiServerError("`openssl` is needed to make a service-account key (apt-get install openssl)") from exc


def _write_kubeconfig(path: Path, url: str, ca_file: Path, tokens: dict[str, str]) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}} for user, token in tokens.items()],
        "contexts": [
            {"name": ADMIN_CONTEXT, "context": {"cluster": "local", "user": ADMIN_USER}},
            {"name": UNPRIVILEGED_CONTEXT, "context": {"cluster": "local", "user": UNPRIVILEGED_USER}},
        ],
        "current-context": ADMIN_CONTEXT,
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    path.chmod(0o600)


def _start(binaries: Binaries, workdir: Path, processes: _Processes, timeout: float) -> LocalApiServer:
    etcd_port, peer_port, api_port = _free_ports(3)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd_log = workdir / "etcd.log"
    etcd = processes.start(
        "etcd",
        [
            str(binaries.etcd),
            "--name=default",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--max-request-bytes=10485760",  # the InferenceService CRD is over the 1.5 MiB default
            "--log-level=warn",
        ],
        etcd_log,
    )
    _wait_until(lambda: _http_ok(f"{etcd_url}/health"), etcd, "etcd", etcd_log, timeout)

    admin_token, unprivileged_token = secrets.token_hex(16), secrets.token_hex(16)
    (workdir / "tokens.csv").write_text(
        f'{admin_token},{ADMIN_USER},uid-admin,"system:masters"\n{unprivileged_token},{UNPRIVILEGED_USER},uid-tester\n'
    )
    _service_account_key(workdir / "sa.key")
    cert_dir = workdir / "certs"
    api_log = workdir / "kube-apiserver.log"
    apiserver = processes.start(
        "kube-apiserver",
        [
            str(binaries.apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            "--insecure-port=0",
            f"--cert-dir={cert_dir}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={workdir / 'sa.key'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--profiling=false",
            "--v=1",
        ],
        api_log,
    )
    url = f"https://127.0.0.1:{api_port}"
    ca_file = cert_dir / "apiserver.crt"  # the self-signed serving cert followed by its CA

    def ready() -> bool:
        if not ca_file.exists():
            return False
        context = ssl.create_default_context(cafile=str(ca_file))
        return _http_ok(f"{url}/readyz", context=context, token=admin_token)

    _wait_until(ready, apiserver, "kube-apiserver", api_log, timeout)
    kubeconfig = workdir / "kubeconfig"
    tokens = {ADMIN_USER: admin_token, UNPRIVILEGED_USER: unprivileged_token}
    _write_kubeconfig(kubeconfig, url, ca_file, tokens)
    return LocalApiServer(
        url=url,
        ca_file=ca_file,
        kubeconfig=kubeconfig,
        admin_token=admin_token,
        unprivileged_token=unprivileged_token,
        pids=processes.pids,
    )


def _start_with_retries(binaries: Binaries, tmp: Path, processes: _Processes, timeout: float) -> LocalApiServer:
    for attempt in range(1, START_ATTEMPTS + 1):
        workdir = tmp / f"attempt-{attempt}"
        workdir.mkdir()
        started = time.monotonic()
        try:
            server = _start(binaries, workdir, processes, timeout)
        except ApiServerError:
            processes.stop()
            if attempt == START_ATTEMPTS:
                raise
            log.warning("local API server failed to start (attempt %d); retrying", attempt, exc_info=True)
            continue
        log.info("kube-apiserver ready at %s in %.1f s", server.url, time.monotonic() - started)
        return server
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_apiserver(binaries: Binaries, *, timeout: float = 90.0) -> Iterator[LocalApiServer]:
    """Start etcd and kube-apiserver in a temporary directory; stop both and remove it on exit.

    A start that fails (a port taken in the meantime, say) is retried with fresh ports. Leaving
    raises ApiServerError if a PID of ours is still alive after the stop.
    """
    with tempfile.TemporaryDirectory(prefix="bert-kfp-k8s-") as tmp:
        processes = _Processes()
        try:
            yield _start_with_retries(binaries, Path(tmp), processes, timeout)
        finally:
            processes.stop()
