"""Receiving over C-STORE: DCMTK storescu sends to the node's SCP running in this process."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from sqlalchemy import select

from db.models import Instance, Job, Series, Study
from db.states import JobState
from tests.peers import parse_store_statuses, require_binary, storescu, storescu_command, storescu_profile_args
from tests.receive_helpers import (
    MR_IMAGE_STORAGE,
    SeriesSpec,
    make_enhanced_mr,
    make_mr_slice,
    running_scp,
    sqlite_session_factory,  # noqa: F401 - a pytest fixture
    write_series,
)

pytestmark = pytest.mark.peers

T2 = SeriesSpec(3, "T2 TSE axial", 4000.0, 100.0)
T1 = SeriesSpec(4, "T1 SE axial", 500.0, 12.0)
CE_T1 = SeriesSpec(5, "T1 SE axial +C", 500.0, 12.0, contrast_agent="Gadovist")
PATIENT_NAME = "Secretname^Tongue"
PATIENT_ID = "PHANTOM-001"

# (transfer syntax, DCMTK command making it from an uncompressed file or None
# for pydicom's encoder, bits stored of the source, whether it is lossless)
SYNTAX_CASES = [
    (ExplicitVRLittleEndian, None, 16, True),
    (ImplicitVRLittleEndian, ["dcmconv", "+ti"], 16, True),
    (DeflatedExplicitVRLittleEndian, ["dcmconv", "+td"], 16, True),
    (JPEGBaseline8Bit, ["dcmcjpeg", "+eb"], 8, False),
    (JPEGLossless, ["dcmcjpeg", "+el"], 16, True),
    (JPEGLosslessSV1, ["dcmcjpeg", "+e1"], 16, True),
    (JPEGLSLossless, ["dcmcjpls", "+el"], 16, True),
    (JPEGLSNearLossless, ["dcmcjpls", "+en"], 16, False),
    (JPEG2000Lossless, None, 12, True),
    (JPEG2000, None, 12, False),
    (RLELossless, ["dcmcrle"], 16, True),
]

def _send(files: list[Path], port: int, **options: object):
    run = storescu(files, port, **options)
    return run


def _make_compressed(folder: Path, syntax: str, command: list[str] | None, bits: int) -> tuple[Path, np.ndarray]:
    source = make_mr_slice(generate_uid(), generate_uid(), T2, 0, rows=64, columns=64, bits=bits)
    original = source.pixel_array.copy()
    plain = folder / "plain.dcm"
    target = folder / "compressed.dcm"
    if syntax == ExplicitVRLittleEndian:
        source.save_as(target, enforce_file_format=True)
    elif command is None:
        options = {"j2k_cr": [4]} if syntax == JPEG2000 else {}
        source.compress(syntax, **options)
        source.save_as(target, enforce_file_format=True)
    else:
        source.save_as(plain, enforce_file_format=True)
        require_binary(command[0])
        subprocess.run([*command, str(plain), str(target)], check=True, capture_output=True, timeout=30)
    return target, original


def test_storescu_study_recorded_in_spool_and_database(tmp_path, session_factory, caplog):
    caplog.set_level(logging.DEBUG)
    study_uid = generate_uid()
    files = []
    for spec in (T2, T1, CE_T1):
        files += write_series(tmp_path / "in", spec, 4, study_uid=study_uid, patient_name=PATIENT_NAME)

    with running_scp(tmp_path / "spool", session_factory) as scp:
        run = _send(files, scp.port)

    assert run.returncode == 0, run.output
    assert len(run.succeeded_files) == len(files)
    with session_factory() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        series = session.scalars(select(Series).order_by(Series.series_number)).all()
        instances = session.scalars(select(Instance)).all()
        jobs = session.scalars(select(Job)).all()
    assert study.instance_count == 12
    assert study.patient_name == PATIENT_NAME
    assert study.patient_id == PATIENT_ID
    assert study.accession_number == "ACC-1"
    assert study.study_date == "20260101"
    assert study.calling_ae_title == "STORESCU"
    assert study.calling_host == "127.0.0.1"
    assert [s.series_number for s in series] == [3, 4, 5]
    assert [s.instance_count for s in series] == [4, 4, 4]
    assert series[2].header["ContrastBolusAgent"] == "Gadovist"
    assert series[0].header["RepetitionTime"] == 4000.0
    assert series[0].header["ImageType"] == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert series[0].header["ImageOrientationPatient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert series[0].header["Rows"] == 64
    assert len(instances) == 12
    assert [job.state for job in jobs] == [JobState.WAITING]

    spool = tmp_path / "spool"
    for instance in instances:
        stored = pydicom.dcmread(spool / instance.path)
        assert instance.path == f"{study_uid}/{stored.SeriesInstanceUID}/{stored.SOPInstanceUID}.dcm"
        assert len(instance.frame_positions) == 1
        assert stored.pixel_array.shape == (64, 64)
    assert not list((spool / ".incoming").iterdir())

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "association accepted from STORESCU" in logged
    assert "Secretname" not in logged
    assert PATIENT_ID not in logged


@pytest.mark.parametrize(("syntax", "command", "bits", "lossless"), SYNTAX_CASES, ids=[case[0].name for case in SYNTAX_CASES])
def test_compressed_syntax_stored_and_decodes(tmp_path, sqlite_session_factory, syntax, command, bits, lossless):
    source, original = _make_compressed(tmp_path, syntax, command, bits)
    proposal = storescu_profile_args(tmp_path, [MR_IMAGE_STORAGE], [syntax])

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        run = _send([source], scp.port, extra_args=proposal)

    assert run.succeeded_files == [str(source)], run.output
    with sqlite_session_factory() as session:
        instance = session.scalars(select(Instance)).one()
    assert instance.transfer_syntax_uid == syntax
    stored = pydicom.dcmread(tmp_path / "spool" / instance.path)
    assert stored.file_meta.TransferSyntaxUID == syntax
    decoded = stored.pixel_array
    assert decoded.shape == original.shape
    if lossless:
        assert np.array_equal(decoded, original)
    else:
        error = np.abs(decoded.astype(np.int32) - original.astype(np.int32))
        assert error.mean() < 0.05 * float(original.max())


def test_enhanced_mr_header_from_functional_groups(tmp_path, sqlite_session_factory):
    path = tmp_path / "enhanced.dcm"
    make_enhanced_mr(generate_uid(), generate_uid(), frames=4).save_as(path, enforce_file_format=True)

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        run = _send([path], scp.port)

    assert run.succeeded_files == [str(path)], run.output
    with sqlite_session_factory() as session:
        series = session.scalars(select(Series)).one()
        instance = session.scalars(select(Instance)).one()
    assert series.header["RepetitionTime"] == 4000.0
    assert series.header["FlipAngle"] == 90.0
    assert series.header["EchoTime"] == 95.0
    assert series.header["SliceThickness"] == 4.0
    assert series.header["ImageOrientationPatient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert series.header["AcquisitionTime"] == "101500"
    assert instance.number_of_frames == 4
    assert instance.frame_positions == [[-8.0, -8.0, z * 4.0] for z in range(4)]
    assert instance.image_orientation_patient == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_duplicate_identical_instance_accepted_once(tmp_path, sqlite_session_factory):
    files = write_series(tmp_path / "in", T2, 2)

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        first = _send(files, scp.port)
        second = _send(files, scp.port)

    assert len(first.succeeded_files) == 2
    assert len(second.succeeded_files) == 2
    with sqlite_session_factory() as session:
        assert len(session.scalars(select(Instance)).all()) == 2
        study = session.scalars(select(Study)).one()
    assert study.instance_count == 2
    assert not study.has_conflicts


def test_duplicate_with_different_content_kept_apart(tmp_path, sqlite_session_factory, caplog):
    study_uid, series_uid = generate_uid(), generate_uid()
    original = make_mr_slice(study_uid, series_uid, T2, 0)
    changed = make_mr_slice(study_uid, series_uid, T2, 5)
    changed.SOPInstanceUID = original.SOPInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
    first, second = tmp_path / "first.dcm", tmp_path / "second.dcm"
    original.save_as(first, enforce_file_format=True)
    changed.save_as(second, enforce_file_format=True)

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        assert _send([first], scp.port).succeeded_files == [str(first)]
        assert _send([second], scp.port).succeeded_files == [str(second)]

    with sqlite_session_factory() as session:
        instances = session.scalars(select(Instance).order_by(Instance.id)).all()
        study = session.scalars(select(Study)).one()
    assert [instance.is_conflict for instance in instances] == [False, True]
    assert study.has_conflicts
    assert study.instance_count == 1
    assert study.notes["conflicting_instances"][0]["sop_instance_uid"] == original.SOPInstanceUID
    conflict = instances[1]
    assert conflict.path == f"{study_uid}/{series_uid}/conflicts/{original.SOPInstanceUID}.{conflict.sha256[:12]}.dcm"
    kept = pydicom.dcmread(tmp_path / "spool" / instances[0].path)
    apart = pydicom.dcmread(tmp_path / "spool" / conflict.path)
    assert np.array_equal(kept.pixel_array, original.pixel_array)
    assert np.array_equal(apart.pixel_array, changed.pixel_array)
    assert any(record.levelname == "WARNING" and "kept apart" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("character_set", "patient_name"),
    [
        ("GB18030", "王^小红"),
        ("ISO_IR 192", "Müller^Zoë"),
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎"),
        ("\\ISO 2022 IR 149", "Hong^Gildong=홍^길동"),
    ],
)
def test_patient_name_decoded_with_character_set(tmp_path, sqlite_session_factory, character_set, patient_name):
    path = tmp_path / "slice.dcm"
    make_mr_slice(generate_uid(), generate_uid(), T2, 0, patient_name=patient_name, character_set=character_set).save_as(
        path, enforce_file_format=True
    )

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        run = _send([path], scp.port)

    assert run.succeeded_files == [str(path)], run.output
    with sqlite_session_factory() as session:
        study = session.scalars(select(Study)).one()
    assert study.patient_name == patient_name
    assert study.specific_character_set == character_set
    assert study.notes == {}


@pytest.mark.filterwarnings("ignore:Unknown encoding 'ISO_IR 999'")
def test_unknown_character_set_stored_with_note(tmp_path, sqlite_session_factory):
    path = tmp_path / "slice.dcm"
    with pytest.warns(UserWarning, match="ISO_IR 999"):
        make_mr_slice(generate_uid(), generate_uid(), T2, 0, patient_name="Plain^Ascii", character_set="ISO_IR 999").save_as(
            path, enforce_file_format=True
        )

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        run = _send([path], scp.port)

    assert run.succeeded_files == [str(path)], run.output
    with sqlite_session_factory() as session:
        study = session.scalars(select(Study)).one()
    assert study.patient_name == "Plain^Ascii"
    assert "ISO_IR 999" in study.notes["character_set"]


def test_parallel_associations_same_study(tmp_path, session_factory):
    # Four associations create the same new study and series at once, so
    # the losers of the race for the new rows must retry and find them.
    study_uid, series_uid = generate_uid(), generate_uid()
    files = write_series(tmp_path / "in", T2, 24, study_uid=study_uid, series_uid=series_uid)
    groups = [files[index::4] for index in range(4)]

    with running_scp(tmp_path / "spool", session_factory) as scp:
        senders = [
            subprocess.Popen(storescu_command(group, scp.port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for group in groups
        ]
        outputs = [sender.communicate(timeout=120)[0] for sender in senders]

    succeeded = [path for output in outputs for path, status in parse_store_statuses(output) if status == "Success"]
    assert len(succeeded) == 24, "\n".join(outputs)
    with session_factory() as session:
        study = session.scalars(select(Study)).one()
        series = session.scalars(select(Series)).one()
        instances = session.scalars(select(Instance)).all()
        jobs = session.scalars(select(Job)).all()
    assert study.instance_count == 24
    assert series.instance_count == 24
    assert len(instances) == 24
    assert len(jobs) == 1
