"""Time building and validating the SEG and SR of a 24-slice 512 x 512 study.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_writer [--repeats N]

The study is synthetic (tests/sr_helpers.py): three MR series with an
ellipsoid tumour on the CE-T1 series. The script prints the median wall time
of each step over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from pydicom.uid import ComprehensiveSRStorage, SegmentationStorage

from sr_writer import WriterOptions, build_outputs
from sr_writer.validate import available_validators, validate_output
from tests import sr_helpers

SHAPE = (24, 512, 512)


def _median_seconds(step: Callable[[], object], repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


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
    print(f"build + validate SEG and SR: {total:.2f} s (median of {arguments.repeats})")
    print(f"  validate SEG alone:        {validate_seg:.2f} s")
    print(f"  validate SR alone:         {validate_sr:.2f} s")
    print(f"build + validate with SC:    {with_capture:.2f} s")


if __name__ == "__main__":
    main()
