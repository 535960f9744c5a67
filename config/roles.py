"""Rules that give a received series its role (CE-T1, T2, T1) and judge its slice stack.

The defaults below cover the naming of Siemens, GE and Philips scanners and
Chinese series descriptions. A site overrides any of them in the TOML file's
``[roles]`` section, for example::

    [roles]
    axial_tolerance_deg = 20.0
    contrast_patterns = ['\\+c\\b', 'post', '增强']

Patterns are Python regular expressions, matched case-insensitively against
the lower-cased SeriesDescription and ProtocolName. Many default patterns
use the lookarounds ``(?<![a-z0-9])`` and ``(?![a-z0-9])`` in place of
``\\b``, because ``\\b`` treats the underscore of ``t1_tse_tra`` as part of a word.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RoleName = Literal["ce_t1", "t2", "t1"]


def _token(alternatives: str) -> str:
    """Wrap ``alternatives`` so that they match only as a whole alphanumeric token."""
    return rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])"


# A name that matches both lists ("pre-gad", "vor KM", "non-contrast") is
# taken as non-contrast, because those phrases contain the contrast word.
DEFAULT_CONTRAST_PATTERNS = [
    _token(r"post|postcontrast|gad|gado\w*|gd|km|kontrast|ce|contrast|enh|enhanced|nach|c\+"),
    r"\+\s*(?:c|gd|km|contrast)(?![a-z0-9])",
    r"w/\s*(?:c|gd|gad|contrast)(?![a-z0-9])",
    r"增强",
]
DEFAULT_NON_CONTRAST_PATTERNS = [
    _token(r"pre|precontrast|pre[-_ ]?gad|pre[-_ ]?contrast|native|nativ|plain|non[-_ ]?contrast|vor|ohne|without"),
    r"w/o",
    r"(?<![a-z0-9])-\s*c(?![a-z0-9])",
    r"平扫",
]
# Philips names may start with "s" (SENSE) before the weighting: "sT1W_3D_TFE".
DEFAULT_T1_PATTERNS = [
    r"(?<![a-z0-9])s?t1(?![0-9*])",
    _token(r"mprage|mp[-_]?rage|vibe|starvibe|bravo|lava|thrive|fspgr|spgr|flash|t1ffe"),
]
DEFAULT_T2_PATTERNS = [
    r"(?<![a-z0-9])s?t2(?![0-9*])",
    _token(r"frfse|haste|space|cube|vista|t2ffe|blade|propeller|multivane"),
]
DEFAULT_FAT_SUPPRESSION_PATTERNS = [
    _token(r"fs|fatsat|fat[-_ ]?sat|fat[-_ ]?supp\w*|spair|spir|m?dixon|water|chess|ideal|flex"),
    r"压脂",
    r"抑脂",
    r"脂肪抑制",
]
DEFAULT_LOCALIZER_PATTERNS = [
    _token(r"loc|localizer|localiser|scout|survey|3[-_ ]?plane|tri[-_ ]?plane|pilot|aahead\w*"),
    r"定位",
]
DEFAULT_EXCLUSION_PATTERNS = {
    "diffusion": [
        _token(r"dwi|adc|dti|diff|diffusion|trace|ep2d[-_]?diff\w*|resolve|b\d{2,4}|exp|tensor"),
        r"弥散",
        r"扩散",
    ],
    "inversion recovery (FLAIR/STIR)": [_token(r"flair|stir|tirm|dark[-_ ]?fluid")],
    "proton density": [_token(r"pd|pdw|proton[-_ ]?density")],
    "susceptibility or T2*": [r"t2\s*\*", _token(r"t2star|swi|swan|medic|merge|hemo")],
    "parametric map": [_token(r"map|mapping|relaxometry|mapit|mdme|synthetic")],
    "dynamic or perfusion": [
        _token(r"dyn|dynamic|dce|perf|perfusion|twist|disco|4d|tricks|bolus[-_ ]?track\w*"),
        r"动态",
        r"灌注",
    ],
    "reformat or projection": [_token(r"mpr|mip|minip|reformat\w*|sub|subtraction")],
    "calibration": [_token(r"calibration|cal|asset[-_ ]?cal|b0[-_ ]?map|b1[-_ ]?map|field[-_ ]?map|shim")],
    "angiography": [_token(r"tof|mra|angio")],
}
DEFAULT_AXIAL_PATTERNS = [_token(r"ax|axial|tra|trans|transverse"), r"横断", r"轴位"]
DEFAULT_CORONAL_PATTERNS = [_token(r"cor|coronal"), r"冠状"]
DEFAULT_SAGITTAL_PATTERNS = [_token(r"sag|sagittal"), r"矢状"]
# NOTE: scanners can mark Dixon water images DERIVED. A site that takes its
# fat-suppressed CE-T1 from a Dixon series removes "DERIVED" here.
DEFAULT_EXCLUDED_IMAGE_TYPES = [
    "DERIVED",
    "LOCALIZER",
    "ADC",
    "TRACE",
    "DIFFUSION",
    "MPR",
    "PROJECTION IMAGE",
    "PROJECTION",
    "MIP",
    "SUBTRACTION",
    "EADC",
    "FA",
    "CALC",
]
DEFAULT_NO_AGENT_VALUES = ["", "none", "no", "nil", "n/a", "na", "0", "-", "without", "无"]


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StackRules(_Rules):
    """When the slices of a chosen series count as one contiguous stack."""

    spacing_tolerance: float = Field(default=0.2, gt=0, lt=1)
    min_slices: int = Field(default=3, ge=2)
    orientation_tolerance: float = Field(default=1e-3, gt=0)


class EnhancementRules(_Rules):
    """Thresholds of the image comparison that finds which of two T1-weighted series is post-contrast.

    Each series is divided by the median of its body mask (voxels above
    ``body_threshold`` times its 99th percentile), and the series whose
    ``top_percentile`` intensity is higher by at least ``min_relative_gain`` is
    taken as post-contrast.
    """

    enabled: bool = True
    top_percentile: float = Field(default=98.0, gt=50, lt=100)
    body_threshold: float = Field(default=0.1, gt=0, lt=1)
    min_relative_gain: float = Field(default=0.15, gt=0)
    voxel_gain: float = Field(default=0.3, gt=0)
    max_slices_read: int = Field(default=200, ge=1)
    max_in_plane: int = Field(default=256, ge=16)


class RoleRules(_Rules):
    """Tag and name rules that map a series to its role, with their thresholds.

    Timing thresholds are in milliseconds, as RepetitionTime (0018,0080) and
    EchoTime (0018,0081) are stored (PS3.3 section C.8.3.1).
    """

    contrast_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTRAST_PATTERNS))
    non_contrast_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_NON_CONTRAST_PATTERNS))
    t1_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_T1_PATTERNS))
    t2_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_T2_PATTERNS))
    fat_suppression_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FAT_SUPPRESSION_PATTERNS)
    )
    localizer_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_LOCALIZER_PATTERNS))
    exclusion_patterns: dict[str, list[str]] = Field(
        default_factory=lambda: {name: list(patterns) for name, patterns in DEFAULT_EXCLUSION_PATTERNS.items()}
    )
    axial_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_AXIAL_PATTERNS))
    coronal_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_CORONAL_PATTERNS))
    sagittal_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_SAGITTAL_PATTERNS))
    excluded_image_types: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDED_IMAGE_TYPES))
    no_agent_values: list[str] = Field(default_factory=lambda: list(DEFAULT_NO_AGENT_VALUES))

    t1_max_repetition_time_ms: float = Field(default=800.0, gt=0)
    t1_max_echo_time_ms: float = Field(default=30.0, gt=0)
    t2_min_repetition_time_ms: float = Field(default=2000.0, gt=0)
    t2_min_echo_time_ms: float = Field(default=60.0, gt=0)

    # The segmentation model takes axial stacks, so by default only axial
    # series qualify for a role. Oblique axials angled along the hard palate
    # stay within 30 degrees of the patient's z axis.
    accepted_orientations: list[Literal["axial", "coronal", "sagittal"]] = Field(
        default_factory=lambda: ["axial"], min_length=1
    )
    axial_tolerance_deg: float = Field(default=30.0, gt=0, le=60)

    stack: StackRules = Field(default_factory=StackRules)
    enhancement: EnhancementRules = Field(default_factory=EnhancementRules)

    @field_validator(
        "contrast_patterns",
        "non_contrast_patterns",
        "t1_patterns",
        "t2_patterns",
        "fat_suppression_patterns",
        "localizer_patterns",
        "axial_patterns",
        "coronal_patterns",
        "sagittal_patterns",
    )
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            _compile(pattern)
        return patterns

    @field_validator("exclusion_patterns")
    @classmethod
    def _check_exclusions(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for patterns in groups.values():
            for pattern in patterns:
                _compile(pattern)
        return groups

    @field_validator("excluded_image_types")
    @classmethod
    def _upper_image_types(cls, values: list[str]) -> list[str]:
        return [value.strip().upper() for value in values]

    @field_validator("no_agent_values")
    @classmethod
    def _lower_agent_values(cls, values: list[str]) -> list[str]:
        return [value.strip().lower() for value in values]

    @model_validator(mode="after")
    def _check_timing(self) -> RoleRules:
        if self.t1_max_repetition_time_ms >= self.t2_min_repetition_time_ms:
            raise ValueError(
                f"roles.t1_max_repetition_time_ms ({self.t1_max_repetition_time_ms}) must be below "
                f"roles.t2_min_repetition_time_ms ({self.t2_min_repetition_time_ms}); lower the first "
                "or raise the second"
            )
        if self.t1_max_echo_time_ms >= self.t2_min_echo_time_ms:
            raise ValueError(
                f"roles.t1_max_echo_time_ms ({self.t1_max_echo_time_ms}) must be below "
                f"roles.t2_min_echo_time_ms ({self.t2_min_echo_time_ms}); lower the first or raise the second"
            )
        return self


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"roles pattern {pattern!r} is not a valid regular expression ({exc}); fix it") from exc
