"""Time building and validating the SEG and SR of a 24-slice 512 x 512 study.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_writer [--repeats N]

The study is synthetic (tests/sr_helpers.py): three MR series with an
ellipsoid tumour on the CE-T1 series. The script prints the median wall time
of each step over the repeats, and the CPU time of this process plus its
validator subprocesses, which other load on the machine inflates less.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

from pydicom.uid import ComprehensiveSRStorage, SegmentationStorage

from sr_writer import WriterOptions, build_outputs
from sr_writer.validate import available_validators, validate_output
from tests import sr_helpers

SHAPE = (24, 512, 512)


def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _median_seconds(step: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Return the median wall time and median CPU time of ``step``."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
        step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(_cpu_seconds() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    """Build the synthetic study, time each step and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per step (default 3)")
    arguments = parser.parse_args()

    study = sr_helpers.make_study(shape=SHAPE)
    options = WriterOptions()
    outputs = build_outputs(study.result, study.sources, options)
    seg = next(ds for ds in outputs if ds.SOPClassUID == SegmentationStorage)
    sr = next(ds for ds in outputs if ds.SOPClassUID == ComprehensiveSRStorage)

    total = _median_seconds(lambda: build_outputs(study.result, study.sources, options), arguments.repeats)
    validate_seg = _median_seconds(lambda: validate_output(seg), arguments.repeats)
    validate_sr = _median_seconds(lambda: validate_output(sr), arguments.repeats)
    with_capture = _median_seconds(
        lambda: build_outputs(study.result, study.sources, WriterOptions(secondary_capture=True)),
        arguments.repeats,
    )

    print(f"study: {SHAPE[0]} slices of {SHAPE[1]} x {SHAPE[2]}, tumour voxels {int(study.result.segmentation.mask.sum())}")
    print(f"validators: {available_validators()}")
    print(f"SEG frames: {int(seg.NumberOfFrames)}, SEG size: {len(seg.PixelData)} bytes of pixel data")
    print(f"median of {arguments.repeats} runs, wall / CPU seconds:")
    print(f"  build + validate SEG and SR: {total[0]:.2f} / {total[1]:.2f}")
    print(f"  validate SEG alone:          {validate_seg[0]:.2f} / {validate_seg[1]:.2f}")
    print(f"  validate SR alone:           {validate_sr[0]:.2f} / {validate_sr[1]:.2f}")
    print(f"  build + validate with SC:    {with_capture[0]:.2f} / {with_capture[1]:.2f}")


if __name__ == "__main__":
    main()
