"""Coded concepts used in the node's SEG and SR.

Standard codes come from pydicom's code dictionaries (DICOM PS3.16). The
concepts that no standard terminology names, such as the nomogram's outputs,
use the private coding scheme ``99OTSCC``. PS3.3 section 8.2 reserves
designators that start with "99" for private schemes, and every object that
uses one declares it in CodingSchemeIdentificationSequence (0008,0110).
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99OTSCC"


def private_scheme_item() -> CodingSchemeIdentificationItem:
    """Build the declaration of the private scheme for CodingSchemeIdentificationSequence."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name="otscc-node local codes",
        responsible_organization="otscc-node project",
    )


def _private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


# Segment and finding (SNOMED CT, as in the TID 1500 reference objects of dcmqi).
TUMOUR_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
TUMOUR_TYPE = codes.SCT.NeoplasmPrimary
TONGUE = codes.SCT.Tongue
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence

# NOTE: pydicom's dictionaries hold no code for "MR of the tongue" or of the
# neck. SNOMED CT 113091000 "Magnetic resonance imaging" is the nearest
# procedure code whose meaning is certain, and the finding site (tongue)
# carries the anatomy.
PROCEDURE_REPORTED = Code("113091000", "SCT", "Magnetic resonance imaging")

# Measurements (TID 1419).
VOLUME = codes.SCT.Volume
VOLUME_METHOD = codes.DCM.SumOfSegmentedVoxelMethodForVolume
DIAMETER = codes.SCT.Diameter
MAXIMUM = codes.SCT.Maximum
UNIT_MM3 = codes.UCUM.CubicMillimeter
UNIT_MM = codes.UCUM.Millimeter
UNIT_NONE = codes.UCUM.NoUnits
# The probability is stored in percent: UCUM "%" cannot be misread, whereas
# "1" ({no units}) would leave a reader to guess whether 0.4 means 0.4 % or
# 40 %.
UNIT_PERCENT = codes.UCUM.Percent

RADIOMICS_SCORE = _private("RADSCORE", "Radiomics signature score")
NODAL_METASTASIS_PROBABILITY = _private(
    "LNMPROB", "Probability of cervical lymph node metastasis"
)
NODAL_METASTASIS_CUTOFF = _private(
    "LNMCUT", "Cutoff for cervical lymph node metastasis risk group"
)
NODAL_METASTASIS_RISK = _private(
    "LNMRISK", "Cervical lymph node metastasis risk group"
)
HIGH_RISK = codes.SCT.HighRisk
LOW_RISK = codes.SCT.LowRisk

# Summary of the algorithm's run (CID 6047, "CAD Processing and Findings Summary").
PROCESSING_SUMMARY = codes.DCM.CADProcessingAndFindingsSummary
ALL_SUCCEEDED_WITH_FINDINGS = codes.DCM.AllAlgorithmsSucceededWithFindings
ALL_SUCCEEDED_WITHOUT_FINDINGS = codes.DCM.AllAlgorithmsSucceededWithoutFindings
NOT_ALL_SUCCEEDED_WITH_FINDINGS = codes.DCM.NotAllAlgorithmsSucceededWithFindings
NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS = codes.DCM.NotAllAlgorithmsSucceededWithoutFindings
NONE_SUCCEEDED = codes.DCM.NoAlgorithmsSucceededWithoutFindings

# Image Library (TID 1600) entries: the purpose of reference of a source
# image, as highdicom's own library entries name it, and the modality
# descriptor (CID 29) of the CE-T1 series.
LIBRARY_SOURCE = codes.SCT.Source
IMAGING_MEASUREMENTS = codes.DCM.ImagingMeasurements
MODALITIES = {"MR": codes.DCM.MagneticResonance}

# Text statements in the "Qualitative Evaluations" container of TID 1500.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT = codes.DCM.Comment
INPUT_SERIES = _private("INSERIES", "Input series used")
ROLE_EVIDENCE = _private("ROLEEVID", "Evidence for series role")
MISSING_INPUT = _private("MISSVAR", "Missing clinical variable")
IMPUTED_INPUT = _private("IMPVAR", "Imputed clinical variable")
INVALID_INPUT = _private("INVALVAR", "Invalid clinical variable")
REPLACED_OBJECT = _private("REPLACES", "Replaces earlier result")
FAILURE_REASON = _private("FAILREAS", "Reason no result was produced")
FAILURE_HINT = _private("FAILHINT", "Action to take")
FAILURE_CODE = _private("FAILCODE", "Failure code")
