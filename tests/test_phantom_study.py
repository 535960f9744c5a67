"""Tests of the synthetic phantom generator: headers, geometry, contrasts, determinism."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEGLSLossless, RLELossless

from inference.result import SequenceRole
from training.phantom import make_cohort, make_study, metastasis_probability
from training.phantom_anatomy import LesionSpec

SMALL = {"rows": 64, "columns": 64, "slices": 16}


@pytest.fixture(scope="module")
def siemens_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("siemens")
    return make_study(out, seed=11, vendor="siemens", extra_series=True, **SMALL)


def _read_series(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def _volume(paths: list[Path]) -> np.ndarray:
    return np.stack([ds.pixel_array.astype(np.float32) for ds in _read_series(paths)])


@pytest.mark.parametrize(
    ("vendor", "manufacturer", "descriptions"),
    [
        ("siemens", "SIEMENS", ("t1_tse_tra_fs_post", "t2_tse_tra_fs", "t1_tse_tra")),
        ("ge", "GE MEDICAL SYSTEMS", ("Ax T1 FSE +C", "Ax T2 FRFSE FS", "Ax T1 FSE")),
        ("philips", "Philips Healthcare", ("T1W_TSE_TRA_GD", "T2W_TSE_SPAIR_TRA", "T1W_TSE_TRA")),
    ],
)
def test_vendor_header_styles(tmp_path, vendor, manufacturer, descriptions):
    study = make_study(tmp_path, seed=3, vendor=vendor, rows=32, columns=32, slices=4)

    for role, description in zip(SequenceRole, descriptions):
        ds = pydicom.dcmread(study.files[role][0])
        assert ds.Manufacturer == manufacturer
        assert ds.SeriesDescription == description
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.SeriesInstanceUID == study.series_instance_uids[role]

    ce = pydicom.dcmread(study.files[SequenceRole.CE_T1][0])
    t1 = pydicom.dcmread(study.files[SequenceRole.T1][0])
    t2 = pydicom.dcmread(study.files[SequenceRole.T2][0])
    assert ce.ContrastBolusAgent
    assert "ContrastBolusAgent" not in t1
    assert ce.AcquisitionTime > t1.AcquisitionTime
    assert float(t2.RepetitionTime) > 2000
    assert float(t2.EchoTime) > 60
    assert float(t1.RepetitionTime) < 1000
    assert float(t1.EchoTime) < 20


def test_every_object_labelled_synthetic(siemens_study):
    all_paths = [p for paths in siemens_study.files.values() for p in paths]
    all_paths += [p for paths in siemens_study.extra_series.values() for p in paths]

    for ds in _read_series(all_paths):
        assert str(ds.PatientName).startswith("PHANTOM^")
        assert ds.PatientIdentityRemoved == "YES"
        assert "SYNTHETIC PHANTOM" in ds.StudyDescription
        assert "SYNTHETIC PHANTOM" in ds.ImageComments
        assert ds.InstitutionName == "otscc-node phantom"


def test_one_study_and_frame_of_reference(siemens_study):
    all_paths = [p for paths in siemens_study.files.values() for p in paths]
    all_paths += [p for paths in siemens_study.extra_series.values() for p in paths]
    datasets = _read_series(all_paths)

    assert {ds.StudyInstanceUID for ds in datasets} == {siemens_study.study_instance_uid}
    assert {ds.FrameOfReferenceUID for ds in datasets} == {siemens_study.frame_of_reference_uid}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 6
    assert set(siemens_study.extra_series) == {"localizer", "coronal_ce_t1", "t1_fs"}


def test_chinese_headers_round_trip(tmp_path):
    study = make_study(tmp_path, seed=5, vendor="ge", chinese=True, rows=32, columns=32, slices=4)

    ce = pydicom.dcmread(study.files[SequenceRole.CE_T1][0])
    t2 = pydicom.dcmread(study.files[SequenceRole.T2][0])
    t1 = pydicom.dcmread(study.files[SequenceRole.T1][0])
    assert ce.SpecificCharacterSet == "GB18030"
    assert str(ce.PatientName) == "体模^张三5"
    assert ce.SeriesDescription == "T1增强 横断位"
    assert t2.SeriesDescription == "T2压脂 横断位"
    assert t1.SeriesDescription == "T1平扫 横断位"
    assert "体模".encode("gb18030") in study.files[SequenceRole.CE_T1][0].read_bytes()


def test_mask_matches_ce_t1_grid(siemens_study, tmp_path):
    datasets = _read_series(siemens_study.files[SequenceRole.CE_T1])
    first, second = datasets[0], datasets[1]
    geometry = siemens_study.geometry

    assert siemens_study.mask.shape == (len(datasets), first.Rows, first.Columns)
    assert siemens_study.mask.dtype == np.uint8
    assert np.allclose(geometry.origin, [float(v) for v in first.ImagePositionPatient], atol=1e-3)
    assert np.isclose(geometry.spacing[2], float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2]))
    assert np.allclose(geometry.spacing[:2], [float(v) for v in first.PixelSpacing])

    for suffix in ("mask.nii.gz", "mask.nrrd"):
        written = sitk.ReadImage(str(siemens_study.write_mask(tmp_path / suffix)))
        assert np.allclose(written.GetOrigin(), geometry.origin, atol=1e-3)
        assert np.allclose(written.GetSpacing(), geometry.spacing)
        assert np.array_equal(sitk.GetArrayFromImage(written), siemens_study.mask)


def test_sitk_series_geometry_matches_mask(siemens_study):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in siemens_study.files[SequenceRole.CE_T1]])
    image = reader.Execute()

    assert np.allclose(image.GetOrigin(), siemens_study.geometry.origin, atol=1e-3)
    assert np.allclose(image.GetSpacing(), siemens_study.geometry.spacing, atol=1e-4)
    assert image.GetSize() == siemens_study.geometry.size


def test_lesion_contrast_by_sequence(siemens_study):
    mask = siemens_study.mask.astype(bool)
    tongue_ring = _ring_around(mask)
    means = {}
    for role in SequenceRole:
        volume = _volume(siemens_study.files[role])
        means[role] = (volume[mask].mean(), volume[tongue_ring].mean())

    ce_lesion, ce_around = means[SequenceRole.CE_T1]
    t1_lesion, t1_around = means[SequenceRole.T1]
    t2_lesion, t2_around = means[SequenceRole.T2]
    assert ce_lesion > 1.4 * ce_around
    assert ce_lesion > 2.0 * t1_lesion
    assert t2_lesion > 1.5 * t2_around
    assert t1_lesion < t1_around


def _ring_around(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    grown = ndimage.binary_dilation(mask, iterations=2, structure=np.ones((1, 3, 3)))
    return grown & ~mask


def test_same_seed_same_study(tmp_path):
    first = make_study(tmp_path / "a", seed=9, rows=32, columns=32, slices=4)
    second = make_study(tmp_path / "b", seed=9, rows=32, columns=32, slices=4)
    other = make_study(tmp_path / "c", seed=10, rows=32, columns=32, slices=4)

    assert first.study_instance_uid == second.study_instance_uid
    assert first.series_instance_uids == second.series_instance_uids
    assert np.array_equal(first.mask, second.mask)
    for role in SequenceRole:
        assert np.array_equal(_volume(first.files[role]), _volume(second.files[role]))
    assert other.study_instance_uid != first.study_instance_uid


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless])
def test_compressed_copies_decode_losslessly(tmp_path, syntax):
    plain = make_study(tmp_path / "plain", seed=4, rows=32, columns=32, slices=3)
    packed = make_study(tmp_path / "packed", seed=4, rows=32, columns=32, slices=3, transfer_syntax=syntax)

    ds = pydicom.dcmread(packed.files[SequenceRole.CE_T1][0])
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(_volume(packed.files[SequenceRole.CE_T1]), _volume(plain.files[SequenceRole.CE_T1]))


def test_unsupported_arguments_rejected(tmp_path):
    with pytest.raises(ValueError, match="vendor 'canon' is not supported"):
        make_study(tmp_path, seed=1, vendor="canon")
    with pytest.raises(ValueError, match="transfer_syntax .* is not supported"):
        make_study(tmp_path, seed=1, transfer_syntax="1.2.840.10008.1.2.4.50")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools dciodvfy is not installed")
def test_dciodvfy_reports_no_errors(siemens_study):
    paths = [siemens_study.files[role][0] for role in SequenceRole]
    paths += [siemens_study.extra_series[name][0] for name in siemens_study.extra_series]

    for path in paths:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path}: {errors}"


def test_cohort_label_follows_features(tmp_path):
    studies = make_cohort(tmp_path, 6, seed=2, rows=32, columns=32, slices=8)

    rows = list(csv.DictReader((tmp_path / "cohort.csv").open(encoding="utf-8")))
    assert [r["case_id"] for r in rows] == [s.folder.name for s in studies]
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all((tmp_path / r["mask_path"]).is_file() for r in rows)
    assert all(r["t_stage"] in {"T1", "T2", "T3", "T4"} for r in rows)
    assert all(r["ln_metastasis"] in {"0", "1"} for r in rows)

    base = studies[0]
    small = LesionSpec(base.lesion.centre_mm, base.lesion.semi_axes_mm, base.lesion.surface_terms, 0.0)
    rough = LesionSpec(base.lesion.centre_mm, base.lesion.semi_axes_mm, base.lesion.surface_terms, 1.0)
    base.lesion = small
    low = metastasis_probability(base)
    base.lesion = rough
    high = metastasis_probability(base)
    base.doi_mm += 10.0
    deeper = metastasis_probability(base)
    assert low < high < deeper


@pytest.mark.parametrize(
    ("diameter", "doi", "expected"),
    [(15.0, 4.0, "T1"), (25.0, 4.0, "T2"), (15.0, 6.0, "T2"), (45.0, 3.0, "T3"), (15.0, 11.0, "T3"), (10.0, 21.0, "T4")],
)
def test_t_stage_from_size_and_depth(diameter, doi, expected):
    from training.phantom import t_stage

    assert t_stage(diameter, doi) == expected


def test_depth_of_invasion_grows_inwards():
    from training.phantom import depth_of_invasion
    from training.phantom_anatomy import TONGUE_CENTRE, TONGUE_SEMI_AXES, make_grid

    grid = make_grid(128, 128, 24, 200 / 128, 4.0)
    z = int(np.abs(grid.z_mm - TONGUE_CENTRE[2]).argmin())
    y = int(np.abs(grid.y_mm - TONGUE_CENTRE[1]).argmin())
    edge_x = TONGUE_CENTRE[0] + TONGUE_SEMI_AXES[0] - 1.0
    shallow = np.zeros((24, 128, 128), dtype=np.uint8)
    deep = shallow.copy()
    shallow[z, y, int(np.abs(grid.x_mm - edge_x).argmin())] = 1
    deep[z, y, int(np.abs(grid.x_mm - (edge_x - 10.0)).argmin())] = 1

    assert depth_of_invasion(shallow, grid) < 3.0
    assert depth_of_invasion(deep, grid) == pytest.approx(depth_of_invasion(shallow, grid) + 10.0, abs=2.0)
