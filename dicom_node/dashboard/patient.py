"""Masking and display of patient names and IDs."""

from __future__ import annotations

MASK = "***"


def mask(value: str | None) -> str:
    """Return the first character of ``value`` followed by ``***``, or an empty string."""
    if not value:
        return ""
    return value.strip()[:1] + MASK


def format_person_name(value: str | None) -> str:
    """Render a DICOM PN value for reading.

    Components (``^``) become spaces and the alphabetic, ideographic and
    phonetic groups (``=``, PS3.5 section 6.2.1.2) are joined by `` / ``,
    so ``Zhang^San=张^三`` reads ``Zhang San / 张 三``.
    """
    if not value:
        return ""
    groups = [" ".join(part for part in group.split("^") if part) for group in value.split("=")]
    return " / ".join(group for group in groups if group)


def display_name(value: str | None, *, show: bool) -> str:
    """Return the readable name when ``show`` is set, else its mask."""
    readable = format_person_name(value)
    return readable if show else mask(readable)


def display_id(value: str | None, *, show: bool) -> str:
    """Return the patient ID when ``show`` is set, else its mask."""
    return (value or "") if show else mask(value)
