"""Exceptions raised by the pipeline.

An :class:`InputError` means the study itself cannot be processed as sent
(a gap in the slices, an unreadable transfer syntax, a model that does not
match its manifest). The job runner ends such a job in a failed-input state
and may tell the radiologist why. Any other exception is a fault of the node.
"""

from __future__ import annotations

from typing import Any


class InputError(Exception):
    """A study or model that the pipeline cannot process as it is.

    Parameters
    ----------
    message : str
        What is wrong, naming the value, for administrators and radiologists.
    code : str
        A stable machine-readable reason, for example ``"slice_gap"``.
    series_instance_uid : str or None
        The series at fault, where one is.
    hint : str
        What an administrator can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        series_instance_uid: str | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.series_instance_uid = series_instance_uid
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as ``cls(*args)``, which would drop the keyword
        # arguments; the pipeline's child process sends these to the runner.
        return _rebuild_input_error, (type(self), str(self), self.__dict__.copy())


def _rebuild_input_error(cls: type[InputError], message: str, state: dict[str, Any]) -> InputError:
    error = Exception.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ModelPackageError(InputError):
    """A model package whose manifest and weights do not agree, or that is unreadable."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, code="model_package_invalid", hint=hint)
