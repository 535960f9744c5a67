"""Ingest throughput of the node against DCMTK storescp and Orthanc, over loopback.

Usage::

    .venv/bin/python benchmarks/bench_ingest.py [--series 3] [--slices 72] [--size 512] [--write-docs]

One run generates a study (16-bit MR, ``--series`` x ``--slices`` slices of
``--size`` x ``--size`` pixels) and sends the same files with the same sender,
DCMTK ``storescu``, to three receivers, each started fresh with empty storage:

- the node (``otscc-node serve`` as a subprocess, SQLite job database, fsync
  on), sent to once its segmentation model is loaded, as in service. A
  second row sends as soon as its port opens, while the model loads;
- a minimal pynetdicom receiver (``minimal_scp.py``: raw bytes, no fsync, no
  database), the most a receiver built on pynetdicom's association loop reaches;
- DCMTK ``storescp`` writing bit-preserving files (it has no fsync option);
- Orthanc (in its own network namespace, default storage settings).

Each receiver gets one association carrying every file, and four parallel
associations carrying a quarter each. Both are measured with Nagle's
algorithm as the peers ship it, and with ``TCP_NODELAY=1`` in the environment
of both the receiver and the sender. Debian's DCMTK 3.6.7, which Orthanc 1.10
also uses for DICOM, sets TCP_NODELAY only when that variable is 1. The
node's own sockets always have TCP_NODELAY set.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

from pydicom.uid import generate_uid  # noqa: E402

from tests.peers import (  # noqa: E402
    free_ports,
    peer_environment,
    port_is_open,
    start_orthanc,
    start_storescp,
    stop_process,
    storescu_command,
    wait_until,
)
from tests.receive_helpers import NODE_AE, SeriesSpec, write_series  # noqa: E402

DOCS_PATH = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_HEADING = "## Ingest throughput"
SERIES_SPECS = (
    SeriesSpec(3, "T2 TSE axial", 4000.0, 100.0),
    SeriesSpec(4, "T1 SE axial", 500.0, 12.0),
    SeriesSpec(5, "T1 SE axial +C", 500.0, 12.0, contrast_agent="Gadovist"),
)
SEND_TIMEOUT_S = 900
MIB = 1024 * 1024
MODEL_LOAD_TIMEOUT_S = 300
# The line otscc-node serve logs at INFO once its warm-up has loaded the model.
MODEL_LOADED = re.compile(r"segmentation (DEMO )?model .* loaded in")

# Written by hand from a separate profile, so they are not regenerated with
# the figures; reread them after a change to the receive path.
READING_NOTES = [
    "Where the time goes on one association, from a separate profile (py-spy 0.4 at 1 kHz on "
    "`otscc-node serve` with its model loaded, fsync on, the 216 files of this study, about 7.9 ms "
    "per image in all):",
    "",
    "- The C-STORE handler used about 2.7 ms of CPU per image. Of that, the SQLite transaction took "
    "about 1.0 ms, the spool write 0.65 ms, parsing the dataset and encoding the file 0.45 ms, and "
    "the SHA-256 digest 0.3 ms.",
    "- Durability: `benchmarks/bench_durable_write.py` on the same idle disk took 0.9 ms (median) "
    "for write, fdatasync, rename and folder fsync of a 525 KB file, and 0.1-0.2 ms for the SQLite "
    "commit with synchronous=FULL (section \"Durable write latency\"). The node's rows with fsync on "
    "and off differ by no more than that, within the noise between runs. storescp and Orthanc skip "
    "both fsyncs.",
    "- The rest is pynetdicom 3.0.4 itself, as the minimal receiver's rows show: per image, its DUL "
    "and association threads decode each PDU in Python and poll with 1 ms sleeps "
    "(dul.py, association.py).",
    "",
    "The minimal pynetdicom receiver does no validation, no fsync and no database work; the node does "
    "all of that on top of the same association loop, so it cannot be faster than the minimal rows. "
    "Durability is not what stands in the way: it costs the node about 1 ms per image.",
    "",
]


@dataclass(frozen=True)
class Measurement:
    """One receiver, one Nagle setting, one association count."""

    receiver: str
    tcp_nodelay: bool
    associations: int
    files: int
    megabytes: float
    seconds: float
    succeeded: int

    @property
    def images_per_second(self) -> float:
        """Instances acknowledged with Success per second of wall-clock time."""
        return self.succeeded / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        """Megabytes (10^6 bytes) of files sent per second."""
        return self.megabytes / self.seconds


# A receiver context manager yields (port, prefix): the port to send to and
# the command prefix that puts the sender in the receiver's namespace.
ReceiverFactory = Callable[[Path, bool], AbstractContextManager[tuple[int, list[str]]]]


@contextmanager
def node_receiver(
    folder: Path, tcp_nodelay: bool, *, fsync: bool = True, wait_for_model: bool = True, max_pdu: int = 16382
) -> Iterator[tuple[int, list[str]]]:
    """Run ``otscc-node serve`` with its data under ``folder``.

    ``fsync`` sets ``storage.fsync`` and ``max_pdu`` sets ``node.max_pdu``.
    With ``wait_for_model`` the senders start once the node has logged that
    its segmentation model is loaded.
    Without it they start as soon as the port is open, so the transfer
    competes for the CPU with the pipeline worker loading TensorFlow.
    """
    (port,) = free_ports(1)
    config = folder / "config.toml"
    log_path = folder / "node.log"
    config.write_text(
        "\n".join(
            [
                'log_level = "INFO"',
                "[node]",
                f'ae_title = "{NODE_AE}"',
                'bind_address = "127.0.0.1"',
                f"port = {port}",
                f"max_pdu = {max_pdu}",
                "[storage]",
                f'data_dir = "{folder / "data"}"',
                "min_free_mb = 0",
                f"fsync = {'true' if fsync else 'false'}",
                "[dashboard]",
                "enabled = false",
                "",
            ]
        ),
        encoding="utf-8",
    )
    environment = {key: value for key, value in peer_environment(tcp_nodelay).items() if not key.startswith("OTSCC_")}
    environment.pop("DATABASE_URL", None)
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(config)],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    try:
        wait_until(lambda: process.poll() is not None or port_is_open(port), 120, "otscc-node serve")
        if wait_for_model:
            wait_until(
                lambda: process.poll() is not None or MODEL_LOADED.search(log_text()) is not None,
                MODEL_LOAD_TIMEOUT_S,
                "the node's model load",
            )
        if process.poll() is not None:
            raise RuntimeError(f"otscc-node serve exited: {log_text()[-2000:]}")
        yield port, []
    finally:
        stop_process(process, timeout_s=60)


@contextmanager
def storescp_receiver(folder: Path, tcp_nodelay: bool) -> Iterator[tuple[int, list[str]]]:
    """Run DCMTK ``storescp`` writing into ``folder``."""
    (port,) = free_ports(1)
    with start_storescp(folder / "storescp", port, ae_title=NODE_AE, env=peer_environment(tcp_nodelay)):
        yield port, []


@contextmanager
def minimal_receiver(folder: Path, tcp_nodelay: bool, *, max_pdu: int = 16382) -> Iterator[tuple[int, list[str]]]:
    """Run ``minimal_scp.py`` writing into ``folder``; pynetdicom ignores ``TCP_NODELAY``."""
    (port,) = free_ports(1)
    script = Path(__file__).with_name("minimal_scp.py")
    command = [sys.executable, str(script), str(port), str(folder / "minimal"), str(max_pdu)]
    with (folder / "minimal.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: process.poll() is not None or port_is_open(port), 60, "minimal_scp.py")
        if process.poll() is not None:
            raise RuntimeError(f"minimal_scp.py exited: {(folder / 'minimal.log').read_text(errors='replace')[-2000:]}")
        yield port, []
    finally:
        stop_process(process, timeout_s=30)


@contextmanager
def orthanc_receiver(folder: Path, tcp_nodelay: bool) -> Iterator[tuple[int, list[str]]]:
    """Run Orthanc in its own network namespace with storage under ``folder``."""
    with start_orthanc(folder, ae_title=NODE_AE, env=peer_environment(tcp_nodelay)) as orthanc:
        yield orthanc.dicom_port, orthanc.namespace_prefix


RECEIVERS: dict[str, ReceiverFactory] = {
    "otscc-node": node_receiver,
    # For reference only: the cost of durability. The SQLite commit still
    # syncs its write-ahead log, because the database settings fix that.
    "otscc-node, fsync off": functools.partial(node_receiver, fsync=False),
    "otscc-node, while the model loads": functools.partial(node_receiver, wait_for_model=False),
    "otscc-node, max PDU 1 MiB": functools.partial(node_receiver, max_pdu=MIB),
    "minimal pynetdicom SCP": minimal_receiver,
    "minimal pynetdicom SCP, max PDU 1 MiB": functools.partial(minimal_receiver, max_pdu=MIB),
    "DCMTK storescp": storescp_receiver,
    "Orthanc": orthanc_receiver,
}


def send_parallel(files: list[Path], port: int, prefix: list[str], associations: int, tcp_nodelay: bool) -> tuple[float, int]:
    """Send ``files`` over ``associations`` storescu processes at once; return (seconds, successes)."""
    groups = [files[index::associations] for index in range(associations)]
    environment = peer_environment(tcp_nodelay)
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [*prefix, *storescu_command(group, port, called_ae=NODE_AE)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        for group in groups
    ]
    outputs = [sender.communicate(timeout=SEND_TIMEOUT_S)[0] for sender in senders]
    seconds = time.perf_counter() - start
    successes = sum(output.count("Received Store Response (Success)") for output in outputs)
    return seconds, successes


def measure(files: list[Path], work: Path, receiver: str, tcp_nodelay: bool, associations: int) -> Measurement:
    """Start ``receiver`` fresh, send every file, stop it, and return the figures."""
    folder = Path(tempfile.mkdtemp(prefix="receiver-", dir=work))
    with RECEIVERS[receiver](folder, tcp_nodelay) as (port, prefix):
        seconds, succeeded = send_parallel(files, port, prefix, associations, tcp_nodelay)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    return Measurement(receiver, tcp_nodelay, associations, len(files), megabytes, seconds, succeeded)


def run_cases(files: list[Path], work: Path, repeat: int) -> list[Measurement]:
    """Measure every case ``repeat`` times and keep the fastest run of each.

    The receivers take turns within each repetition, so a burst of load from
    other processes does not fall on one receiver only.
    """
    best: dict[tuple[str, bool, int], Measurement] = {}
    for _ in range(repeat):
        for tcp_nodelay in (False, True):
            for associations in (1, 4):
                for receiver in RECEIVERS:
                    result = measure(files, work, receiver, tcp_nodelay, associations)
                    print(
                        f"{receiver:22s} nodelay={tcp_nodelay!s:5s} associations={associations}: "
                        f"{result.images_per_second:7.1f} images/s ({result.succeeded}/{result.files} acknowledged)",
                        flush=True,
                    )
                    key = (receiver, tcp_nodelay, associations)
                    if key not in best or result.images_per_second > best[key].images_per_second:
                        best[key] = result
    return list(best.values())


def make_study(folder: Path, series: int, slices: int, size: int) -> list[Path]:
    """Write the benchmark study into ``folder`` and return its files."""
    study_uid = generate_uid()
    files: list[Path] = []
    for spec in SERIES_SPECS[:series]:
        files += write_series(folder, spec, slices, study_uid=study_uid, rows=size, columns=size)
    return files


def machine_description() -> str:
    """Return the CPU model, core count and kernel of this machine."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def markdown_table(results: list[Measurement]) -> str:
    """Return the results as a markdown table, one row per receiver and Nagle setting."""
    lines = [
        "| receiver | Nagle | 1 association (images/s, MB/s) | 4 associations (images/s, MB/s) | acknowledged |",
        "|---|---|---|---|---|",
    ]
    for receiver in RECEIVERS:
        for tcp_nodelay in (False, True):
            cells = []
            acknowledged = []
            for associations in (1, 4):
                match = next(
                    r for r in results if (r.receiver, r.tcp_nodelay, r.associations) == (receiver, tcp_nodelay, associations)
                )
                cells.append(f"{match.images_per_second:.1f} ({match.megabytes_per_second:.1f})")
                acknowledged.append(f"{match.succeeded}/{match.files}")
            setting = "TCP_NODELAY=1" if tcp_nodelay else "as shipped"
            lines.append(f"| {receiver} | {setting} | {cells[0]} | {cells[1]} | {', '.join(acknowledged)} |")
    return "\n".join(lines)


def ratio_lines(results: list[Measurement]) -> list[str]:
    """Return the node's throughput relative to each peer with TCP_NODELAY=1."""
    def rate(receiver: str, associations: int) -> float:
        return next(
            r.images_per_second for r in results if (r.receiver, r.tcp_nodelay, r.associations) == (receiver, True, associations)
        )

    lines = []
    met = True
    for associations in (1, 4):
        node = rate("otscc-node", associations)
        to_storescp = node / rate("DCMTK storescp", associations)
        to_orthanc = node / rate("Orthanc", associations)
        met = met and to_storescp >= 0.5 and to_orthanc >= 1.0
        lines.append(
            f"- {associations} association(s), TCP_NODELAY=1: node / storescp = {to_storescp:.2f}, "
            f"node / Orthanc = {to_orthanc:.2f}"
        )
    references = ("otscc-node, max PDU 1 MiB", "minimal pynetdicom SCP", "minimal pynetdicom SCP, max PDU 1 MiB")
    for receiver in references:
        for associations in (1, 4):
            value = rate(receiver, associations)
            lines.append(
                f"- for reference, {receiver}, {associations} association(s): / storescp = "
                f"{value / rate('DCMTK storescp', associations):.2f}, / Orthanc = "
                f"{value / rate('Orthanc', associations):.2f}"
            )
    verdict = "met" if met else "not met"
    lines += [
        "",
        f"Targets for TCP_NODELAY=1 (node at least 0.5 x storescp and at least 1 x Orthanc): {verdict}.",
        "",
        *_ceiling_lines(rate),
    ]
    return lines


def _ceiling_lines(rate: Callable[[str, int], float]) -> list[str]:
    """Return, per target and association count, whether the faster minimal pynetdicom row meets it."""
    lines = ["The faster of the two minimal pynetdicom rows against each target, in this run:", ""]
    for peer, target in (("DCMTK storescp", 0.5), ("Orthanc", 1.0)):
        for associations in (1, 4):
            best = max(
                rate(receiver, associations) for receiver in ("minimal pynetdicom SCP", "minimal pynetdicom SCP, max PDU 1 MiB")
            )
            ratio = best / rate(peer, associations)
            outcome = "meets it" if ratio >= target else f"misses it by a factor of {target / ratio:.1f}"
            lines.append(f"- target {target:g} x {peer}, {associations} association(s): reaches {ratio:.2f} x, {outcome}")
    return lines


def write_docs(report: str) -> None:
    """Replace the ingest section of ``docs/benchmarks.md`` with ``report``, keeping other sections."""
    existing = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else "# Benchmarks\n"
    if SECTION_HEADING in existing:
        before, _, rest = existing.partition(SECTION_HEADING)
        following = rest.find("\n## ")
        after = rest[following:] if following >= 0 else "\n"
        updated = before + report + after
    else:
        updated = existing.rstrip("\n") + "\n\n" + report + "\n"
    DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOCS_PATH.write_text(updated, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and optionally write it into docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=3, choices=(1, 2, 3), help="number of series (default 3)")
    parser.add_argument("--slices", type=int, default=72, help="slices per series (default 72)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice (default 512)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case; the fastest is reported (default 2)")
    parser.add_argument("--work-dir", type=Path, help="folder for the study and the receivers' storage (default: a temporary folder)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS_PATH.relative_to(REPOSITORY_ROOT)}")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.work_dir) as work_name:
        work = Path(work_name)
        files = make_study(work / "study", args.series, args.slices, args.size)
        load_before = os.getloadavg()[0]
        results = run_cases(files, work, args.repeat)
        load_after = os.getloadavg()[0]

    command = "python benchmarks/bench_ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    megabytes = results[0].megabytes
    report = "\n".join(
        [
            SECTION_HEADING,
            "",
            f"Command: `{command.strip()}`",
            "",
            f"Machine: {machine_description()}. The 1-minute load average was {load_before:.1f} at the "
            f"start and {load_after:.1f} at the end of the run. Each case was run {args.repeat} times, "
            "the receivers taking turns, and the fastest run is shown.",
            "",
            f"Study: {args.series} series x {args.slices} slices of {args.size}x{args.size} 16-bit MR, "
            f"{len(files)} files, {megabytes:.0f} MB, explicit VR little endian, sent by DCMTK storescu 3.6.7 "
            "(one process per association). Wall-clock time from starting the senders until all exit; "
            "each receiver starts fresh with empty storage. The node's rows other than \"while the model "
            "loads\" start sending once the node has logged that its model is loaded. The node fsyncs "
            "every file and its folder and "
            "commits its SQLite row (synchronous=FULL) before it answers; the row \"fsync off\" skips the "
            "file and folder fsyncs and shows what durability costs. storescp 3.6.7 has no fsync option "
            "and Orthanc 1.10.1 has none for its storage area. Every receiver offers a maximum PDU of "
            "16 KiB (the node's and pynetdicom's 16382, storescp's and Orthanc's default 16384) except "
            "the rows marked \"max PDU 1 MiB\".",
            "",
            markdown_table(results),
            "",
            *ratio_lines(results),
            "",
            *READING_NOTES,
        ]
    )
    print()
    print(report)
    if args.write_docs:
        write_docs(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
