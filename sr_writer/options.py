"""Settings of the writers: the node's identity and what to produce."""

from __future__ import annotations

from dataclasses import dataclass, field

#: First SeriesNumber tried for the node's outputs. Scanners number their
#: series from 1 upwards, so a high range rarely collides.
DEFAULT_SERIES_NUMBER_BASE = 9901


@dataclass(frozen=True)
class SupersededObject:
    """An earlier output of the node that a new run replaces."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


@dataclass
class WriterOptions:
    """Identity of the node and the choice of output objects.

    Attributes
    ----------
    manufacturer : str
        Manufacturer (0008,0070) of every object written.
    manufacturer_model_name : str
        ManufacturerModelName (0008,1090).
    device_serial_number : str
        DeviceSerialNumber (0018,1000); also the device observer's serial number.
    software_versions : str
        SoftwareVersions (0018,1020) of the node.
    institution_name : str
        InstitutionName (0008,0080); empty to leave it out.
    station_name : str
        StationName (0008,1010), usually the node's AE title.
    device_uid : str
        Device Observer UID (DCM 121012) in the SR. Empty derives a stable
        UID from the manufacturer, model and serial number.
    omit_empty_frames : bool
        Leave slices without tumour out of the SEG. The default keeps them,
        because some viewers expect one frame per source slice.
    send_failure_report : bool
        Whether the job runner sends an SR explaining why no result was made.
    secondary_capture : bool
        Also produce a Secondary Capture with the contour burned in.
    series_number_base : int
        First SeriesNumber tried; numbers the study already uses are skipped.
    superseded : list of tuple of str
        (SOP Class UID, SOP Instance UID, Series Instance UID) of earlier
        results that this run replaces.
    """

    manufacturer: str = "otscc-node"
    manufacturer_model_name: str = "otscc-node"
    device_serial_number: str = "0"
    software_versions: str = "0.1.0"
    institution_name: str = ""
    station_name: str = "OTSCC"
    device_uid: str = ""
    omit_empty_frames: bool = False
    send_failure_report: bool = True
    secondary_capture: bool = False
    series_number_base: int = DEFAULT_SERIES_NUMBER_BASE
    superseded: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.series_number_base <= 2**31 - 3:
            raise ValueError(
                f"series_number_base must be between 1 and {2**31 - 3}, "
                f"got {self.series_number_base}; choose a positive SeriesNumber"
            )
        for entry in self.superseded:
            if len(entry) != 3 or not all(isinstance(uid, str) and uid for uid in entry):
                raise ValueError(
                    f"superseded entries must be (SOP Class UID, SOP Instance UID, "
                    f"Series Instance UID) strings, got {entry!r}"
                )

    @property
    def superseded_objects(self) -> list[SupersededObject]:
        """The superseded results as named records."""
        return [SupersededObject(*entry) for entry in self.superseded]
