"""Latency of the ways to make one received instance durable, on the spool's disk.

Usage::

    .venv/bin/python benchmarks/bench_durable_write.py [--folder DIR] [--size 525000] [--repeat 200]

Each case writes ``--size`` random bytes (one 512 x 512 16-bit slice with
its header) ``--repeat`` times into a temporary folder under ``--folder``
and prints the median and 90th percentile of one write:

- ``spool``: :meth:`dicom_node.spool.Spool.write` itself: a new temporary
  file, write, fdatasync, rename into its series folder, fsync of that folder;
- ``new file, fdatasync``: a new file, write and fdatasync only (its name
  is not yet durable);
- ``journal``: pwrite into a preallocated, already written file and
  fdatasync, which syncs data blocks and no file system metadata;
- ``sqlite commit (FULL)`` and ``(NORMAL)``: one small row committed in
  WAL mode, as the node's instance record is.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

from dicom_node.spool import Spool  # noqa: E402

DEFAULT_SIZE = 525_000


def _write_new(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(descriptor, data)
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)


def spool_case(folder: Path, data: bytes) -> Callable[[int], None]:
    """Return a function that stores one instance with :meth:`Spool.write` in an existing series folder."""
    spool = Spool(folder, fsync=True)
    spool.write(spool.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.0"), data)
    return lambda index: spool.write(spool.instance_path("1.2.3", "1.2.3.4", f"1.2.3.4.{index + 1}"), data)


def new_file_case(folder: Path, data: bytes) -> Callable[[int], None]:
    """Return a function that writes a new file with fdatasync and nothing else."""
    return lambda index: _write_new(folder / f"{index}.dcm", data)


def journal_case(folder: Path, data: bytes, repeat: int) -> Callable[[int], None]:
    """Return a function that writes into a preallocated journal file with pwrite and fdatasync."""
    path = folder / "journal"
    with path.open("wb") as handle:
        handle.write(bytes(len(data) * repeat))
        handle.flush()
        os.fsync(handle.fileno())
    descriptor = os.open(path, os.O_RDWR)

    def write(index: int) -> None:
        os.pwrite(descriptor, data, index * len(data))
        os.fdatasync(descriptor)

    return write


def sqlite_case(folder: Path, synchronous: str) -> Callable[[int], None]:
    """Return a function that commits one 300-byte row in WAL mode with ``synchronous``."""
    connection = sqlite3.connect(folder / f"{synchronous}.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("CREATE TABLE instance (id INTEGER PRIMARY KEY, path TEXT)")

    def write(index: int) -> None:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO instance (id, path) VALUES (?, ?)", (index, "x" * 300))
        connection.execute("COMMIT")

    return write


def measure(write: Callable[[int], None], repeat: int) -> tuple[float, float]:
    """Return the median and 90th percentile of ``repeat`` calls, in milliseconds."""
    durations = []
    for index in range(repeat):
        started = time.perf_counter()
        write(index)
        durations.append((time.perf_counter() - started) * 1000.0)
    durations.sort()
    return statistics.median(durations), durations[int(0.9 * (repeat - 1))]


def main(argv: list[str] | None = None) -> int:
    """Run every case and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("var"), help="folder on the disk to measure (default var/)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"bytes per write (default {DEFAULT_SIZE})")
    parser.add_argument("--repeat", type=int, default=200, help="writes per case (default 200)")
    args = parser.parse_args(argv)

    args.folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(args.size)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.repeat} writes of {args.size} bytes in {args.folder.resolve()}")
    print("| case | median (ms) | p90 (ms) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-durable-", dir=args.folder) as work:
        cases: dict[str, Callable[[Path], Callable[[int], None]]] = {
            "spool (fdatasync, rename, folder fsync)": lambda folder: spool_case(folder, data),
            "new file, fdatasync": lambda folder: new_file_case(folder, data),
            "journal (pwrite, fdatasync)": lambda folder: journal_case(folder, data, args.repeat),
            "sqlite commit (FULL)": lambda folder: sqlite_case(folder, "FULL"),
            "sqlite commit (NORMAL)": lambda folder: sqlite_case(folder, "NORMAL"),
        }
        for number, (name, make) in enumerate(cases.items()):
            folder = Path(work) / str(number)
            folder.mkdir()
            median, p90 = measure(make(folder), args.repeat)
            print(f"| {name} | {median:.2f} | {p90:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
