"""Features of the node's extraction path against pyradiomics' own baseline.

pyradiomics 3.0.1 ships regression cases (MR images with labels) and the
values it expects for them under several settings. Each case and settings
column here runs through :func:`inference.radiomics.extract_tumour_features`
with a parameter file holding that column's settings, and every feature in
the baseline must agree within 0.1 % relative.

Left out, because their inputs are not in the public data folder: the
shape2D class (it needs ``*_label_2D.nrrd`` files) and the lung1/lung2 CT
cases. Only the default, normalization, resampling and resegmentation
columns are checked. Shape features appear only in the default and
resampling columns of the baseline, so only those runs enable the class.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from pathlib import Path

import pytest
import SimpleITK as sitk

from inference.radiomics import extract_tumour_features
from inference.result import SequenceRole

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("OTSCC_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
BASELINE_DIR = DATA_ROOT / "radiomics_baseline_pyradiomics"

CASES = ("brain1", "brain2", "breast1")
SETTINGS_SUFFIXES = ("", "_normalization", "_resampling", "_resegmentation")
FEATURE_CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
RELATIVE_TOLERANCE = 1e-3
# Features whose expected value is this close to zero are compared absolutely.
ABSOLUTE_TOLERANCE = 1e-12

pytestmark = pytest.mark.skipif(
    not BASELINE_DIR.is_dir(),
    reason=f"pyradiomics baseline data not found at {BASELINE_DIR}; set OTSCC_TEST_DATA",
)


def _read_baseline(column: str) -> tuple[dict[str, dict], dict[str, float]]:
    """Return the settings per feature class and the expected values for one column."""
    settings: dict[str, dict] = {}
    expected: dict[str, float] = {}
    for feature_class in FEATURE_CLASSES:
        with open(BASELINE_DIR / "baseline" / f"baseline_{feature_class}.csv", newline="") as file:
            rows = list(csv.reader(file))
        header = rows[0]
        if column not in header:
            continue
        index = header.index(column)
        for row in rows[1:]:
            name, value = row[0], row[index]
            if name == "diagnostics_Configuration_Settings":
                settings[feature_class] = ast.literal_eval(value)
            elif not name.startswith("diagnostics_") and value != "":
                expected[name] = float(value)
    return settings, expected


def _write_params(path: Path, settings_by_class: dict[str, dict]) -> Path:
    """Write a pyradiomics parameter file for the classes of one baseline column.

    JSON is a subset of YAML, so pyradiomics reads the file as it is.
    Settings whose value is None are left out: None is pyradiomics' default
    for each of them, and its parameter schema rejects null values.
    """
    settings_list = list(settings_by_class.values())
    assert all(s == settings_list[0] for s in settings_list), "classes use different settings"
    setting = {key: value for key, value in settings_list[0].items() if value is not None}
    params = {
        "imageType": {"Original": {}},
        "featureClass": {name: None for name in settings_by_class},
        "setting": setting,
    }
    path.write_text(json.dumps(params))
    return path


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("suffix", SETTINGS_SUFFIXES, ids=lambda s: s.lstrip("_") or "default")
def test_features_match_pyradiomics_baseline(case: str, suffix: str, tmp_path: Path) -> None:
    settings_by_class, expected = _read_baseline(case + suffix)
    params_path = _write_params(tmp_path / "params.yaml", settings_by_class)
    image = sitk.ReadImage(str(BASELINE_DIR / f"{case}_image.nrrd"))
    mask = sitk.ReadImage(str(BASELINE_DIR / f"{case}_label.nrrd"))

    result = extract_tumour_features({SequenceRole.CE_T1: image}, mask, params_path=params_path)

    assert result.status == "ok"
    prefix = f"{SequenceRole.CE_T1.value}_"
    missing = sorted(name for name in expected if prefix + name not in result.features)
    assert missing == []
    outside = {
        name: (value, result.features[prefix + name])
        for name, value in expected.items()
        if abs(result.features[prefix + name] - value)
        > max(RELATIVE_TOLERANCE * abs(value), ABSOLUTE_TOLERANCE)
    }
    assert outside == {}
    assert len(expected) > 80
