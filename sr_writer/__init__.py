"""Writers of the node's DICOM outputs: tumour SEG, TID 1500 SR and Secondary Capture.

The package turns an :class:`inference.result.PipelineResult` and the input
series' datasets into validated pydicom datasets. It never touches the
network or the database; the job runner sends what it returns.
"""

from __future__ import annotations

from .errors import OutputValidationError
from .failure import build_failure_report
from .options import WriterOptions
from .outputs import build_outputs

__all__ = ["OutputValidationError", "WriterOptions", "build_failure_report", "build_outputs"]
