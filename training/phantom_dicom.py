"""DICOM MR Image Storage writer for synthetic phantoms, in vendor header styles.

Each slice is a single-frame MR Image (PS3.3 A.4) with the Patient, General
Study, General Series, Frame of Reference, General Equipment, General Image,
Image Plane, Image Pixel, MR Image, VOI LUT and SOP Common modules, plus the
Contrast/Bolus module on contrast-enhanced series. Every object says that it
is a synthetic phantom and not a patient.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEGLSLossless,
    MRImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

SYNTHETIC_NOTE = "SYNTHETIC PHANTOM - NOT A PATIENT"
INSTITUTION = "otscc-node phantom"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

# Stored values use 12 of 16 bits, as most MR scanners write them.
BITS_STORED = 12
FULL_SCALE = 2600.0

UNCOMPRESSED_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
COMPRESSED_SYNTAXES = (JPEGLSLossless, RLELossless)


class Vendor(enum.Enum):
    """Scanner manufacturer whose header style a phantom imitates."""

    SIEMENS = "siemens"
    GE = "ge"
    PHILIPS = "philips"


class SeriesKind(enum.Enum):
    """Every series a phantom study can hold: the three inputs and the decoys."""

    CE_T1 = "ce_t1"
    T2 = "t2"
    T1 = "t1"
    LOCALIZER = "localizer"
    CORONAL_CE_T1 = "coronal_ce_t1"
    T1_FAT_SAT = "t1_fs"


@dataclass(frozen=True)
class SeriesStyle:
    """Header values of one series in one vendor's style."""

    description: str
    series_number: int
    acquisition_offset_s: int
    repetition_time: float
    echo_time: float
    echo_train_length: int
    scan_options: str
    sequence_name: str
    image_type: tuple[str, ...]
    contrast_agent: str | None = None


@dataclass(frozen=True)
class VendorStyle:
    """Equipment attributes and per-series styles of one vendor."""

    manufacturer: str
    model: str
    software: str
    field_strength: float
    sequence_variant: tuple[str, ...]
    series: dict[SeriesKind, SeriesStyle] = field(default_factory=dict)


def _siemens() -> VendorStyle:
    image_type = ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")
    return VendorStyle(
        manufacturer="SIEMENS",
        model="MAGNETOM Skyra",
        software="syngo MR E11",
        field_strength=3.0,
        sequence_variant=("SK", "SP", "OSP"),
        series={
            SeriesKind.LOCALIZER: SeriesStyle("localizer", 1, 0, 8.6, 4.0, 1, "", "*fl2d1", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
            SeriesKind.T1: SeriesStyle("t1_tse_tra", 3, 300, 550.0, 9.8, 3, "", "*tse2d1_3", image_type),
            SeriesKind.T2: SeriesStyle("t2_tse_tra_fs", 4, 560, 3800.0, 92.0, 15, "FS", "*tse2d1_15", image_type),
            SeriesKind.T1_FAT_SAT: SeriesStyle("t1_tse_tra_fs", 5, 800, 600.0, 9.8, 3, "FS", "*tse2d1_3", image_type),
            SeriesKind.CE_T1: SeriesStyle("t1_tse_tra_fs_post", 7, 1150, 600.0, 9.8, 3, "FS", "*tse2d1_3", image_type, "Gadovist"),
            SeriesKind.CORONAL_CE_T1: SeriesStyle("t1_tse_cor_fs_post", 8, 1400, 600.0, 9.8, 3, "FS", "*tse2d1_3", image_type, "Gadovist"),
        },
    )


def _ge() -> VendorStyle:
    image_type = ("ORIGINAL", "PRIMARY", "OTHER")
    return VendorStyle(
        manufacturer="GE MEDICAL SYSTEMS",
        model="DISCOVERY MR750",
        software="DV26.0_R02",
        field_strength=3.0,
        sequence_variant=("SK", "OSP"),
        series={
            SeriesKind.LOCALIZER: SeriesStyle("3Plane Loc", 1, 0, 5.2, 1.6, 1, "", "", ("ORIGINAL", "PRIMARY", "LOCALIZER")),
            SeriesKind.T1: SeriesStyle("Ax T1 FSE", 3, 300, 520.0, 10.5, 3, "", "fse", image_type),
            SeriesKind.T2: SeriesStyle("Ax T2 FRFSE FS", 4, 560, 3600.0, 88.0, 16, "FS", "frfse", image_type),
            SeriesKind.T1_FAT_SAT: SeriesStyle("Ax T1 FSE FS", 5, 800, 560.0, 10.5, 3, "FS", "fse", image_type),
            SeriesKind.CE_T1: SeriesStyle("Ax T1 FSE +C", 7, 1150, 560.0, 10.5, 3, "FS", "fse", image_type, "Gd-DTPA"),
            SeriesKind.CORONAL_CE_T1: SeriesStyle("Cor T1 FSE +C", 8, 1400, 560.0, 10.5, 3, "FS", "fse", image_type, "Gd-DTPA"),
        },
    )


def _philips() -> VendorStyle:
    image_type = ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE")
    return VendorStyle(
        manufacturer="Philips Healthcare",
        model="Ingenia",
        software="5.4.1",
        field_strength=1.5,
        sequence_variant=("SK",),
        series={
            SeriesKind.LOCALIZER: SeriesStyle("Survey", 101, 0, 11.0, 4.6, 1, "", "", ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
            SeriesKind.T1: SeriesStyle("T1W_TSE_TRA", 301, 300, 500.0, 10.0, 4, "", "", image_type),
            SeriesKind.T2: SeriesStyle("T2W_TSE_SPAIR_TRA", 401, 560, 3500.0, 90.0, 17, "FS", "", image_type),
            SeriesKind.T1_FAT_SAT: SeriesStyle("T1W_TSE_SPIR_TRA", 501, 800, 540.0, 10.0, 4, "FS", "", image_type),
            SeriesKind.CE_T1: SeriesStyle("T1W_TSE_TRA_GD", 701, 1150, 540.0, 10.0, 4, "FS", "", image_type, "Dotarem"),
            SeriesKind.CORONAL_CE_T1: SeriesStyle("T1W_TSE_COR_GD", 801, 1400, 540.0, 10.0, 4, "FS", "", image_type, "Dotarem"),
        },
    )


VENDOR_STYLES = {Vendor.SIEMENS: _siemens, Vendor.GE: _ge, Vendor.PHILIPS: _philips}

# Series descriptions of a Chinese site, written in GB18030 (PS3.5 6.1.2.5.3).
CHINESE_DESCRIPTIONS = {
    SeriesKind.LOCALIZER: "定位像",
    SeriesKind.T1: "T1平扫 横断位",
    SeriesKind.T2: "T2压脂 横断位",
    SeriesKind.T1_FAT_SAT: "T1压脂 横断位",
    SeriesKind.CE_T1: "T1增强 横断位",
    SeriesKind.CORONAL_CE_T1: "T1增强 冠状位",
}


def vendor_style(vendor: Vendor, chinese: bool) -> VendorStyle:
    """Return the header style of ``vendor``, with Chinese series descriptions if asked."""
    style = VENDOR_STYLES[vendor]()
    if not chinese:
        return style
    series = {
        kind: SeriesStyle(**{**s.__dict__, "description": CHINESE_DESCRIPTIONS[kind]})
        for kind, s in style.series.items()
    }
    return VendorStyle(**{**style.__dict__, "series": series})


def derive_uid(*parts: object) -> UID:
    """Derive a valid, reproducible UID from ``parts`` (same parts, same UID)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["otscc-phantom", *map(str, parts)])


@dataclass(frozen=True)
class StudyHeader:
    """Patient and study attributes shared by every series of one phantom."""

    study_instance_uid: str
    frame_of_reference_uid: str
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_age_years: int
    study_datetime: dt.datetime
    accession_number: str
    chinese: bool


@dataclass(frozen=True)
class SliceGeometry:
    """Plane of one series: orientation, slice positions and spacing in millimetres."""

    orientation: tuple[float, ...]
    positions: tuple[tuple[float, float, float], ...]
    pixel_spacing: tuple[float, float]
    slice_thickness: float
    slice_locations: tuple[float, ...]


def _format_date(value: dt.datetime) -> str:
    return value.strftime("%Y%m%d")


def _format_time(value: dt.datetime) -> str:
    return value.strftime("%H%M%S.%f")[:13]


def _file_meta(sop_instance_uid: str, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "OTSCC_PHANTOM"
    return meta


def _patient_and_study(ds: Dataset, study: StudyHeader) -> None:
    ds.SpecificCharacterSet = "GB18030" if study.chinese else "ISO_IR 100"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = study.patient_sex
    ds.PatientAge = f"{study.patient_age_years:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = SYNTHETIC_NOTE

    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = _format_date(study.study_datetime)
    ds.StudyTime = _format_time(study.study_datetime)
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = SYNTHETIC_NOTE


def _series_and_equipment(
    ds: Dataset, study: StudyHeader, vendor: VendorStyle, style: SeriesStyle,
    series_uid: str, acquired: dt.datetime,
) -> None:
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = style.series_number
    ds.SeriesDescription = style.description
    ds.ProtocolName = style.description
    ds.SeriesDate = _format_date(acquired)
    ds.SeriesTime = _format_time(acquired)
    ds.BodyPartExamined = "TONGUE"
    ds.PatientPosition = "HFS"

    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    ds.Manufacturer = vendor.manufacturer
    ds.InstitutionName = INSTITUTION
    ds.StationName = "PHANTOM"
    ds.ManufacturerModelName = vendor.model
    ds.SoftwareVersions = vendor.software
    ds.DeviceSerialNumber = "0000"


def _mr_image(ds: Dataset, vendor: VendorStyle, style: SeriesStyle, spacing: float) -> None:
    ds.ImageType = list(style.image_type)
    ds.ScanningSequence = "GR" if style.repetition_time < 20 else "SE"
    ds.SequenceVariant = list(vendor.sequence_variant)
    ds.ScanOptions = style.scan_options
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = style.sequence_name
    ds.AngioFlag = "N"
    ds.RepetitionTime = style.repetition_time
    ds.EchoTime = style.echo_time
    ds.EchoTrainLength = style.echo_train_length
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = 42.577 * vendor.field_strength
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = vendor.field_strength
    ds.SpacingBetweenSlices = spacing
    ds.FlipAngle = 90 if ds.ScanningSequence == "SE" else 20
    ds.PixelBandwidth = 200
    if style.contrast_agent is not None:
        ds.ContrastBolusAgent = style.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = 7.5


def _plane_and_pixels(ds: Dataset, geometry: SliceGeometry, index: int, pixels: np.ndarray) -> None:
    ds.PixelSpacing = [round(v, 6) for v in geometry.pixel_spacing]
    ds.ImageOrientationPatient = [round(v, 6) for v in geometry.orientation]
    ds.ImagePositionPatient = [round(v, 4) for v in geometry.positions[index]]
    ds.SliceThickness = round(geometry.slice_thickness, 4)
    ds.SliceLocation = round(geometry.slice_locations[index], 4)

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.WindowCenter = 900
    ds.WindowWidth = 1800


def to_stored_values(image: np.ndarray) -> np.ndarray:
    """Scale a 0-1 magnitude image to 12-bit unsigned stored values."""
    scaled = np.rint(image * FULL_SCALE)
    return np.clip(scaled, 0, 2**BITS_STORED - 1).astype(np.uint16)


def write_series(
    folder: Path,
    pixels: np.ndarray,
    *,
    study: StudyHeader,
    vendor: VendorStyle,
    kind: SeriesKind,
    series_uid: str,
    geometry: SliceGeometry,
    transfer_syntax: UID,
) -> tuple[list[Path], list[str]]:
    """Write ``pixels`` (uint16 ``[slice, row, column]``) as one MR series.

    Returns
    -------
    tuple of (list of Path, list of str)
        The files written and their SOP Instance UIDs, in slice order.
    """
    style = vendor.series[kind]
    acquired = study.study_datetime + dt.timedelta(seconds=style.acquisition_offset_s)
    folder.mkdir(parents=True, exist_ok=True)
    spacing = _slice_spacing(geometry)

    paths: list[Path] = []
    uids: list[str] = []
    for index in range(pixels.shape[0]):
        sop_uid = derive_uid(series_uid, "instance", index)
        ds = Dataset()
        ds.file_meta = _file_meta(sop_uid, ExplicitVRLittleEndian)
        _patient_and_study(ds, study)
        _series_and_equipment(ds, study, vendor, style, series_uid, acquired)
        ds.InstanceNumber = index + 1
        ds.AcquisitionNumber = 1
        ds.ContentDate = _format_date(acquired)
        ds.ContentTime = _format_time(acquired)
        ds.AcquisitionDate = _format_date(acquired)
        ds.AcquisitionTime = _format_time(acquired)
        ds.ImageComments = SYNTHETIC_NOTE
        ds.BurnedInAnnotation = "NO"
        _plane_and_pixels(ds, geometry, index, pixels[index])
        _mr_image(ds, vendor, style, spacing)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = ds.ContentDate
        ds.InstanceCreationTime = ds.ContentTime

        path = folder / f"{index + 1:04d}.dcm"
        _save(ds, path, transfer_syntax)
        paths.append(path)
        uids.append(sop_uid)
    return paths, uids


def _slice_spacing(geometry: SliceGeometry) -> float:
    if len(geometry.positions) < 2:
        return geometry.slice_thickness
    first, second = np.asarray(geometry.positions[0]), np.asarray(geometry.positions[1])
    return round(float(np.linalg.norm(second - first)), 4)


def _save(ds: Dataset, path: Path, transfer_syntax: UID) -> None:
    if transfer_syntax in COMPRESSED_SYNTAXES:
        ds.compress(transfer_syntax)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)


def check_transfer_syntax(transfer_syntax: str | None) -> UID:
    """Validate the requested transfer syntax, defaulting to Explicit VR Little Endian."""
    if transfer_syntax is None:
        return ExplicitVRLittleEndian
    uid = UID(transfer_syntax)
    if uid not in UNCOMPRESSED_SYNTAXES + COMPRESSED_SYNTAXES:
        supported = ", ".join(f"{u} ({u.name})" for u in UNCOMPRESSED_SYNTAXES + COMPRESSED_SYNTAXES)
        raise ValueError(f"transfer_syntax {transfer_syntax} is not supported; use one of {supported}")
    return uid
