"""Time the inference pipeline on one synthetic 3 x 24-slice 512 x 512 study.

Usage::

    python -m benchmarks.bench_inference [--model PACKAGE] [--nomogram FILE]
                                         [--workdir DIR] [--repeat N]

Without ``--model`` the benchmark writes an untrained U-Net package with
the default architecture (input 128, alpha 0.35). Its mask is arbitrary, so
the radiomics time then depends on whatever it labels; pass the demo
package for realistic radiomics figures. Prints each stage's seconds per run
and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

from inference.model_package import SegmentationManifest, load_segmentation_model, write_package
from inference.pipeline import PipelineOptions, run_pipeline
from inference.unet import build_unet
from training.phantom import make_study

ROWS = COLUMNS = 512
SLICES = 24


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    arguments = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="bench_inference_"))

    start = time.perf_counter()
    study = make_study(workdir / "study", seed=7, rows=ROWS, columns=COLUMNS, slices=SLICES)
    print(f"study written in {time.perf_counter() - start:.1f} s: {workdir / 'study'}")

    package = arguments.model or _untrained_package(workdir / "untrained_package")
    start = time.perf_counter()
    model = load_segmentation_model(package)
    print(f"model loaded in {time.perf_counter() - start:.1f} s: {package}")

    for run in range(arguments.repeat):
        result = run_pipeline(
            study.files,
            segmentation_model=model,
            nomogram_model=arguments.nomogram,
            options=PipelineOptions(register=arguments.register),
        )
        stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.stage_seconds.items())
        print(
            f"run {run + 1}: {stages}; total {sum(result.stage_seconds.values()):.2f} s; "
            f"tumour {result.segmentation.volume_mm3:.0f} mm3, radiomics {result.radiomics.status}"
        )

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {peak_kib / 1024:.0f} MiB")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="segmentation package folder (default: untrained)")
    parser.add_argument("--nomogram", type=Path, help="nomogram model file (default: none)")
    parser.add_argument("--workdir", type=Path, help="folder for the study (default: a new temporary folder)")
    parser.add_argument("--repeat", type=int, default=2, help="pipeline runs on the same study (default: 2)")
    parser.add_argument("--register", action="store_true", help="rigidly register T2 and T1 to CE-T1")
    return parser.parse_args(argv)


def _untrained_package(folder: Path) -> Path:
    manifest = SegmentationManifest(
        name="untrained-benchmark",
        version="0",
        input_size=(128, 128),
        channels=("ce_t1", "t2", "t1"),
        training_data="none: random weights",
        intended_use="timing benchmarks only",
        is_demo=True,
    )
    return write_package(build_unet(128, 3, 3), folder, manifest)


if __name__ == "__main__":
    sys.exit(main())
