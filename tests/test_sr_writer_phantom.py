"""Outputs for phantom studies written by training.phantom, in three vendors' header styles."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, RLELossless, SegmentationStorage

from inference.result import (
    NomogramResult,
    PipelineResult,
    RadiomicsResult,
    Segmentation,
    SequenceRole,
    SeriesUsed,
)
from sr_writer import WriterOptions, build_outputs
from training.phantom import PhantomStudy, make_study

from . import sr_helpers as helpers

CASES = [
    ("siemens", False, None),
    ("philips", True, JPEGLSLossless),
    ("ge", False, RLELossless),
]


def _result(phantom: PhantomStudy, sources: dict[SequenceRole, list[pydicom.Dataset]]) -> PipelineResult:
    # The UIDs come from the files, slice k of the mask being file k: the
    # phantom's compressed series carry other SOP Instance UIDs than the
    # ones PhantomStudy lists (pydicom's compress() makes new ones).
    series = {
        role: SeriesUsed(
            role=role,
            series_instance_uid=str(sources[role][0].SeriesInstanceUID),
            sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in sources[role]),
            frame_of_reference_uid=phantom.frame_of_reference_uid,
            series_description=str(sources[role][0].get("SeriesDescription", "")),
        )
        for role in SequenceRole
    }
    return PipelineResult(
        study_instance_uid=phantom.study_instance_uid,
        series=series,
        segmentation=Segmentation(
            mask=phantom.mask,
            geometry=phantom.geometry,
            source_sop_instance_uids=series[SequenceRole.CE_T1].sop_instance_uids,
            volume_mm3=phantom.lesion_volume_mm3,
            max_diameter_mm=phantom.max_diameter_mm,
        ),
        radiomics=RadiomicsResult(status="ok"),
        nomogram=NomogramResult(probability=0.2, risk_group="low", cutoff=0.35, radiomics_score=-0.5),
        models=helpers.make_models(),
    )


@pytest.mark.parametrize(("vendor", "chinese", "syntax"), CASES)
def test_phantom_outputs_validate_and_match(
    vendor: str, chinese: bool, syntax: str | None, tmp_path: Path
) -> None:
    phantom = make_study(tmp_path / "study", seed=7, vendor=vendor, chinese=chinese, rows=64, columns=64, slices=12, transfer_syntax=syntax)
    sources = {role: [pydicom.dcmread(path) for path in paths] for role, paths in phantom.files.items()}
    assert phantom.mask.any(), "the phantom has no tumour voxels; choose another seed"

    outputs = build_outputs(_result(phantom, sources), sources, WriterOptions(secondary_capture=True))
    seg_path = helpers.save(next(ds for ds in outputs if ds.SOPClassUID == SegmentationStorage), tmp_path, "seg.dcm")
    seg = hd.seg.segread(seg_path)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in sources[SequenceRole.CE_T1]],
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )

    assert [ds.Modality for ds in outputs] == ["SEG", "SR", "OT"]
    assert np.array_equal(pixels[..., 0] > 0, phantom.mask > 0)
    for ds in outputs:
        assert ds.PatientName == sources[SequenceRole.CE_T1][0].PatientName
        assert ds.SpecificCharacterSet == sources[SequenceRole.CE_T1][0].SpecificCharacterSet
