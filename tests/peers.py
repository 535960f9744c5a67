"""Start DCMTK and Orthanc peers for tests and benchmarks, on loopback and free ports.

A missing binary skips the test with the reason, except under ``CI=true``,
where every peer the install script provides must be there and a missing one
fails the test.

Orthanc 1.10 cannot bind its DICOM port to one address, so
:func:`start_orthanc` runs it in a new network namespace that has only the
loopback interface. Anything that talks to it must run in that namespace:
:meth:`OrthancPeer.command_in_namespace` prefixes a command with ``nsenter``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DEFAULT_TIMEOUT_S = 60.0
_STORE_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")
_SENDING_FILE = re.compile(r"Sending file: (.+)$")


def in_ci() -> bool:
    """Whether the suite runs in CI, where every peer must be installed."""
    return os.environ.get("CI", "").lower() == "true"


def require_binary(name: str) -> str:
    """Return the path of ``name``; skip the test if absent, or fail it in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; install dcmtk, orthanc and iproute2 as .ci/run does"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``condition`` until it is true, or raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Terminate ``process`` and wait; kill it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def peer_environment(tcp_nodelay: bool | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return an environment for a DCMTK or Orthanc process.

    DCMTK since 3.6.x leaves Nagle's algorithm on unless it was built with
    DISABLE_NAGLE_ALGORITHM or the environment variable ``TCP_NODELAY`` is
    ``1`` (dcmnet's DUL reads it), and Debian's 3.6.7 build leaves it on.
    ``tcp_nodelay`` None leaves the variable as inherited.
    """
    environment = dict(os.environ if base is None else base)
    if tcp_nodelay is True:
        environment["TCP_NODELAY"] = "1"
    elif tcp_nodelay is False:
        environment.pop("TCP_NODELAY", None)
    return environment


# ---------------------------------------------------------------- DCMTK storescu


@dataclass
class StoreRun:
    """Result of one ``storescu`` run."""

    returncode: int
    output: str
    statuses: list[tuple[str, str]] = field(default_factory=list)

    @property
    def succeeded_files(self) -> list[str]:
        """Files whose C-STORE response was Success, in the order sent."""
        return [path for path, status in self.statuses if status == "Success"]


def parse_store_statuses(output: str) -> list[tuple[str, str]]:
    """Pair each ``Sending file`` line of ``storescu -v`` output with its response status."""
    statuses = []
    current: str | None = None
    for line in output.splitlines():
        sending = _SENDING_FILE.search(line)
        if sending:
            current = sending.group(1).strip()
            continue
        response = _STORE_RESPONSE.search(line)
        if response and current is not None:
            statuses.append((current, response.group(1)))
            current = None
    return statuses


def storescu_profile_args(folder: Path, sop_classes: Sequence[str], transfer_syntaxes: Sequence[str]) -> list[str]:
    """Write a ``storescu --config-file`` profile and return the arguments that select it.

    By default storescu 3.6.7 proposes uncompressed transfer syntaxes only,
    and it has no flag for some syntaxes (JPEG Lossless Process 14,
    1.2.840.10008.1.2.4.57). A profile proposes exactly the syntaxes given,
    in one presentation context per SOP class.
    """
    syntax_lines = [f"TransferSyntax{number} = {uid}" for number, uid in enumerate(transfer_syntaxes, 1)]
    context_lines = [f"PresentationContext{number} = {uid}\\Syntaxes" for number, uid in enumerate(sop_classes, 1)]
    text = "\n".join(
        [
            "[[TransferSyntaxes]]",
            "[Syntaxes]",
            *syntax_lines,
            "",
            "[[PresentationContexts]]",
            "[Contexts]",
            *context_lines,
            "",
            "[[Profiles]]",
            "[Test]",
            "PresentationContexts = Contexts",
            "",
        ]
    )
    path = folder / "storescu-profile.cfg"
    path.write_text(text, encoding="ascii")
    return ["--config-file", str(path), "Test"]


def storescu_command(
    files: Sequence[Path | str],
    port: int,
    *,
    host: str = "127.0.0.1",
    calling_ae: str = "STORESCU",
    called_ae: str = "OTSCC_NODE",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Return the ``storescu -v`` command line that sends ``files`` on one association."""
    return [
        require_binary("storescu"),
        "-v",
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        *extra_args,
        host,
        str(port),
        *[str(path) for path in files],
    ]


def storescu(
    files: Sequence[Path | str],
    port: int,
    *,
    host: str = "127.0.0.1",
    calling_ae: str = "STORESCU",
    called_ae: str = "OTSCC_NODE",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> StoreRun:
    """Send ``files`` with DCMTK ``storescu`` and return its exit code, output and statuses.

    ``prefix`` runs the command through another one, for example
    :meth:`OrthancPeer.command_in_namespace`'s ``nsenter`` prefix.
    """
    command = [*prefix, *storescu_command(files, port, host=host, calling_ae=calling_ae, called_ae=called_ae, extra_args=extra_args)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=None if env is None else dict(env),
        check=False,
    )
    output = completed.stdout + completed.stderr
    return StoreRun(completed.returncode, output, parse_store_statuses(output))


# ---------------------------------------------------------------- DCMTK storescp


@contextmanager
def start_storescp(
    folder: Path,
    port: int,
    *,
    ae_title: str = "STORESCP",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = 15.0,
) -> Iterator[subprocess.Popen]:
    """Run DCMTK ``storescp`` on ``127.0.0.1:port`` writing into ``folder`` until the block ends.

    Files are written bit-preserving (``+B``), so they are the bytes the
    sender sent. storescp has no option to fsync the files it writes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        require_binary("storescp"),
        "--aetitle",
        ae_title,
        "--output-directory",
        str(folder),
        "+B",
        *extra_args,
        str(port),
    ]
    # NOTE: storescp 3.6.7 has no bind-address option and listens on all
    # interfaces; the test only ever connects to it over 127.0.0.1.
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=None if env is None else dict(env)
    )
    try:
        wait_until(lambda: process.poll() is not None or port_is_open(port), timeout_s, f"storescp on port {port}")
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with {process.returncode}: {process.stderr.read().decode(errors='replace')}")
        yield process
    finally:
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()


# ---------------------------------------------------------------- Orthanc


@dataclass
class OrthancPeer:
    """An Orthanc server running in its own network namespace with only loopback."""

    process: subprocess.Popen
    ae_title: str
    dicom_port: int
    http_port: int
    storage_dir: Path

    @property
    def namespace_prefix(self) -> list[str]:
        """The ``nsenter`` prefix that runs a command in Orthanc's network namespace."""
        return [require_binary("nsenter"), "-t", str(self.process.pid), "-n"]

    def command_in_namespace(self, command: Sequence[str]) -> list[str]:
        """Return ``command`` prefixed to run in Orthanc's network namespace."""
        return [*self.namespace_prefix, *command]

    def rest_get(self, path: str, timeout_s: float = 10.0) -> object:
        """GET ``path`` from Orthanc's REST API (from inside its namespace) and return the JSON."""
        return self._rest("GET", path, None, timeout_s)

    def rest_post(self, path: str, body: object, timeout_s: float = 60.0) -> object:
        """POST ``body`` as JSON to Orthanc's REST API (from inside its namespace) and return the JSON."""
        return self._rest("POST", path, body, timeout_s)

    def _rest(self, method: str, path: str, body: object, timeout_s: float) -> object:
        # The REST port exists only in Orthanc's namespace, so the request
        # runs in a short Python process started there with nsenter.
        script = (
            "import sys, urllib.request;"
            "data = sys.argv[3].encode() if sys.argv[3] else None;"
            "request = urllib.request.Request(sys.argv[1], data=data, method=sys.argv[2]);"
            "sys.stdout.write(urllib.request.urlopen(request, timeout=float(sys.argv[4])).read().decode())"
        )
        url = f"http://127.0.0.1:{self.http_port}{path}"
        payload = "" if body is None else json.dumps(body)
        completed = subprocess.run(
            self.command_in_namespace([sys.executable, "-c", script, url, method, payload, str(timeout_s)]),
            capture_output=True,
            text=True,
            timeout=timeout_s + 10,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"Orthanc REST {method} {path} failed: {completed.stderr.strip()[-500:]}")
        return json.loads(completed.stdout) if completed.stdout.strip() else None

    def instance_count(self) -> int:
        """Number of instances Orthanc has stored."""
        statistics = self.rest_get("/statistics")
        return int(statistics["CountInstances"])

    def study_uids(self) -> list[str]:
        """StudyInstanceUIDs of the studies Orthanc has stored."""
        uids = []
        for study_id in self.rest_get("/studies"):
            study = self.rest_get(f"/studies/{study_id}")
            uids.append(study["MainDicomTags"]["StudyInstanceUID"])
        return uids

    def is_ready(self) -> bool:
        """Return whether the REST API responds."""
        try:
            self.rest_get("/system", timeout_s=2.0)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
            return False
        return True


def orthanc_config(
    folder: Path,
    *,
    ae_title: str,
    dicom_port: int,
    http_port: int,
    modalities: Mapping[str, tuple[str, str, int]],
    stable_age_s: int,
) -> dict[str, object]:
    """Return an Orthanc JSON configuration that stores under ``folder``."""
    return {
        "Name": "otscc-test-orthanc",
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
        "StableAge": stable_age_s,
        "Plugins": [],
    }


@contextmanager
def start_orthanc(
    tmp_path: Path,
    *,
    ae_title: str = "ORTHANC",
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
    stable_age_s: int = 2,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Iterator[OrthancPeer]:
    """Run Orthanc in a new network namespace with only ``lo`` up, until the block ends.

    ``modalities`` maps a name to ``(ae_title, host, port)``, for example the
    node running in the same namespace. The ports are free ports picked here;
    inside the fresh namespace every port is free anyway.
    """
    orthanc = require_binary("Orthanc")
    unshare = require_binary("unshare")
    require_binary("ip")
    folder = tmp_path / "orthanc"
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_ports(2)
    config = orthanc_config(
        folder,
        ae_title=ae_title,
        dicom_port=dicom_port,
        http_port=http_port,
        modalities=modalities or {},
        stable_age_s=stable_age_s,
    )
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log_path = folder / "orthanc.log"

    with log_path.open("wb") as log:
        # unshare and sh exec into Orthanc, so the process id is Orthanc's
        # and nsenter -t PID joins its namespace.
        process = subprocess.Popen(
            [unshare, "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$1"', orthanc, str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
        )
    peer = OrthancPeer(process, ae_title, dicom_port, http_port, folder / "storage")
    try:
        wait_until(lambda: process.poll() is not None or peer.is_ready(), timeout_s, "Orthanc's REST API", 0.2)
        if process.poll() is not None:
            message = f"Orthanc exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        yield peer
    finally:
        stop_process(process)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()
