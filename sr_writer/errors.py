"""Exceptions raised by the writers."""

from __future__ import annotations


class OutputValidationError(Exception):
    """A generated SEG, SR or Secondary Capture object that failed validation.

    The writers raise it in place of returning the object, so the caller has
    nothing to send. The message contains the validator's own output, which
    names the rejected attribute.

    Parameters
    ----------
    message : str
        The validator's name and its message.
    validator : str
        Which check failed: ``"dciodvfy"``, ``"highdicom"`` or ``"dsrdump"``.
    """

    def __init__(self, message: str, *, validator: str = "") -> None:
        super().__init__(message)
        self.validator = validator
