"""Command line of the training tools: ``otscc-train <command>``.

Commands: ``phantoms`` writes synthetic studies, ``train-seg`` trains a
segmentation package, ``eval-seg`` scores packages, ``demo`` rebuilds the
shipped demo models, ``nomogram`` and ``report`` run the nomogram trainer
and the statistics report. Each command imports its module only when it
runs, so a missing optional module breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# Commands provided by other training modules through add_arguments(parser)
# and run_from_args(args) -> int.
DELEGATED_COMMANDS = {
    "nomogram": ("training.nomogram_train", "train the radiomics nomogram from a cohort CSV"),
    "report": ("training.report", "write the statistics report of a trained nomogram"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, configure logging and run one command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_requested_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args) or 0)


def _requested_command(argv: Sequence[str]) -> str | None:
    """Return the first argument that names a command, or None."""
    for index, item in enumerate(argv):
        if item == "--log-level":
            continue
        if index > 0 and argv[index - 1] == "--log-level":
            continue
        if not item.startswith("-"):
            return item
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per tool.

    A delegated command's module is imported only when ``command`` names it,
    because those modules load pandas, scikit-learn and matplotlib.
    """
    parser = argparse.ArgumentParser(prog="otscc-train", description="Train and evaluate site models, build the demo model and write statistics reports.")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: info)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    _add_phantoms(commands.add_parser("phantoms", help="write synthetic phantom studies as DICOM"))
    _add_train_seg(commands.add_parser("train-seg", help="train a segmentation model package"))
    _add_eval_seg(
        commands.add_parser("eval-seg", help="print DSC and IoU of segmentation packages")
    )
    _add_demo(commands.add_parser("demo", help="rebuild the demo models from phantoms"))
    for name, (module, help_text) in DELEGATED_COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if name == command:
            _add_delegated(sub, name, module)
    return parser


def _add_phantoms(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-directory",
        "-od",
        type=Path,
        required=True,
        help="folder to write the studies into",
    )
    parser.add_argument("--count", type=int, default=1, help="number of studies (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--vendor",
        choices=["siemens", "ge", "philips"],
        default=None,
        help="header style; default cycles through all three",
    )
    parser.add_argument("--chinese", action="store_true", help="write GB18030 headers in Chinese")
    parser.add_argument("--rows", type=int, default=128, help="image rows (default: 128)")
    parser.add_argument("--columns", type=int, default=128, help="image columns (default: 128)")
    parser.add_argument("--slices", type=int, default=24, help="slices per series (default: 24)")
    parser.add_argument(
        "--transfer-syntax",
        default=None,
        help="transfer syntax UID (default: Explicit VR Little Endian)",
    )
    parser.add_argument(
        "--extra-series",
        action="store_true",
        help="add a localizer, a coronal CE-T1 and a fat-saturated T1",
    )
    parser.add_argument(
        "--cohort",
        action="store_true",
        help="write a labelled cohort with cohort.csv for the nomogram",
    )
    parser.set_defaults(run=_run_phantoms)


def _run_phantoms(args: argparse.Namespace) -> int:
    from training.phantom import make_cohort, make_study  # noqa: PLC0415

    options = {
        "rows": args.rows,
        "columns": args.columns,
        "slices": args.slices,
        "transfer_syntax": args.transfer_syntax,
        "chinese": args.chinese,
        "extra_series": args.extra_series,
    }
    if args.cohort:
        vendors = (args.vendor,) if args.vendor else ("siemens", "ge", "philips")
        studies = make_cohort(
            args.output_directory, args.count, args.seed, vendors=vendors, **options
        )
        print(f"Wrote {len(studies)} cases and {args.output_directory / 'cohort.csv'}")
        return 0

    vendors = (args.vendor,) if args.vendor else ("siemens", "ge", "philips")
    for index in range(args.count):
        folder = args.output_directory / f"case_{index:03d}"
        study = make_study(
            folder, seed=args.seed + index, vendor=vendors[index % len(vendors)], **options
        )
        study.write_mask(folder / "mask.nii.gz")
        print(
            f"{folder}: study {study.study_instance_uid}, lesion {study.lesion_volume_mm3:.0f} mm3"
        )
    return 0


def _add_train_seg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="cohort CSV with a split column, or a folder of case folders",
    )
    parser.add_argument("--output", type=Path, required=True, help="package folder to write")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of training cases held out for validation (default: 0.2)",
    )
    parser.add_argument(
        "--channels",
        default="ce_t1,t2,t1",
        help="comma-separated sequences in channel order (default: ce_t1,t2,t1)",
    )
    parser.add_argument("--epochs", type=int, default=40, help="training epochs (default: 40)")
    parser.add_argument("--batch-size", type=int, default=2, help="slices per batch (default: 2)")
    parser.add_argument(
        "--input-size",
        type=int,
        default=128,
        help="model input height and width in pixels, a multiple of 32 (default: 128)",
    )
    parser.add_argument(
        "--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default: 0.35)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam learning rate (default: 0.001)"
    )
    parser.add_argument(
        "--encoder-weights",
        type=Path,
        default=None,
        help="local weights file for the MobileNetV2 encoder (default: random)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--run-eagerly",
        action="store_true",
        help="run training steps eagerly: skips graph tracing, only faster for a few steps",
    )
    parser.add_argument("--name", default="otscc-tongue-seg", help="model name in the manifest")
    parser.add_argument("--version", default="0.1.0", help="model version in the manifest")
    parser.add_argument(
        "--not-demo",
        action="store_true",
        help="mark the package as not a demo; requires --training-data and --intended-use",
    )
    parser.add_argument("--training-data", default=None, help="description of the training data")
    parser.add_argument("--intended-use", default=None, help="intended use statement")
    parser.set_defaults(run=_run_train_seg)


def _split_cases(data: Path, val_fraction: float, seed: int):
    """Return (train, validation, test) cases from a cohort CSV or a folder of cases."""
    import numpy as np  # noqa: PLC0415

    from training.seg_data import find_case_folders, load_case, load_cohort_cases  # noqa: PLC0415

    if data.suffix.lower() == ".csv":
        pool = load_cohort_cases(data, "train")
        test = load_cohort_cases(data, "test")
    else:
        folders = find_case_folders(data)
        if not folders:
            raise SystemExit(f"no case folders with a ce_t1/ series found under {data}")
        pool = [load_case(folder) for folder in folders]
        test = []
    if len(pool) < 2:
        raise SystemExit(f"{data} has {len(pool)} training cases; at least 2 are needed")
    order = np.random.default_rng(seed).permutation(len(pool))
    val_count = min(len(pool) - 1, max(1, round(len(pool) * val_fraction)))
    val = [pool[i] for i in order[:val_count]]
    train = [pool[i] for i in order[val_count:]]
    return train, val, test


def _run_train_seg(args: argparse.Namespace) -> int:
    from training.seg_train import TrainConfig, train_segmentation  # noqa: PLC0415

    config_options = {}
    if args.not_demo:
        if not args.training_data or not args.intended_use:
            raise SystemExit(
                "--not-demo needs --training-data and --intended-use to describe the model"
            )
        config_options = {
            "is_demo": False,
            "training_data": args.training_data,
            "intended_use": args.intended_use,
        }
    config = TrainConfig(
        channels=tuple(c.strip() for c in args.channels.split(",") if c.strip()),
        input_size=args.input_size,
        alpha=args.alpha,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
        encoder_weights=args.encoder_weights,
        name=args.name,
        version=args.version,
        run_eagerly=args.run_eagerly,
        **config_options,
    )
    train, val, _ = _split_cases(args.data, args.val_fraction, args.seed)
    result = train_segmentation(train, val, config, args.output)
    print(
        f"Wrote {result.package}: best validation DSC {result.best_val_dsc:.3f} "
        f"at epoch {result.best_epoch}, {result.seconds:.0f} s"
    )
    return 0


def _add_eval_seg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="cohort CSV with a split column, or a folder of case folders",
    )
    parser.add_argument(
        "--package",
        action="append",
        required=True,
        metavar="NAME=FOLDER",
        help="model package to score, repeatable (for example all=models/demo/segmentation)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="print only the summary table, not one table per model and split",
    )
    parser.set_defaults(run=_run_eval_seg)


def _run_eval_seg(args: argparse.Namespace) -> int:
    from training.seg_data import find_case_folders, load_case, load_cohort_cases  # noqa: PLC0415
    from training.seg_eval import (
        evaluate_models,
        format_case_table,
        format_summary_table,
    )  # noqa: PLC0415

    packages = {}
    for item in args.package:
        name, separator, folder = item.partition("=")
        if not separator:
            name, folder = Path(item).name, item
        packages[name] = Path(folder)

    if args.data.suffix.lower() == ".csv":
        splits = {split: load_cohort_cases(args.data, split) for split in ("train", "test")}
        splits = {split: cases for split, cases in splits.items() if cases}
    else:
        splits = {"all": [load_case(folder) for folder in find_case_folders(args.data)]}
    results = evaluate_models(packages, splits)
    if not args.summary_only:
        for (model, split), scores in results.items():
            print(f"\n{model} on {split}\n{format_case_table(scores)}")
    print(format_summary_table(results))
    return 0


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-directory",
        type=Path,
        default=Path("models/demo"),
        help="where to write the demo packages (default: models/demo)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=Path("docs/demo-model.md"),
        help="report page to write (default: docs/demo-model.md)",
    )
    parser.add_argument(
        "--work-directory",
        type=Path,
        default=None,
        help="folder for phantoms and side models (default: a temporary folder)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings that only check the workflow, not a usable model",
    )
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from training.demo import DemoSettings, run_demo  # noqa: PLC0415

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    summary = run_demo(settings, args.models_directory, args.docs, work_dir=args.work_directory)
    print(summary)
    return 0


def _add_delegated(parser: argparse.ArgumentParser, name: str, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"{name} is unavailable because {module_name} could not be imported: {exc}"
        parser.set_defaults(run=lambda _args: _unavailable(message))
        return
    module.add_arguments(parser)
    parser.set_defaults(run=module.run_from_args)


def _unavailable(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
