"""Choose the CE-T1, T2 and T1 series of a study, and record why.

:func:`assign_roles` is a pure function over series headers: each series is
examined on its own (:mod:`dicom_node.role_rules`), then the study decides
what single series cannot:

- Contrast by acquisition order. A contrast agent cannot be taken back, so a
  series acquired after a post-contrast series is post-contrast, and one
  acquired before a non-contrast series is non-contrast.
- Image comparison. Where two T1-weighted series carry no contrast cue, or
  one carries none next to a labelled one, the pixels decide
  (:mod:`dicom_node.enhancement_check`), if a comparator is given.
- Re-scans. Where several series qualify for one role, the choice is, in
  order: a complete slice stack, the higher score (more and stronger cues),
  the later acquisition, the higher SeriesNumber, more instances, and the
  lower SeriesInstanceUID.

Only axial series qualify by default (``roles.accepted_orientations``),
whether or not the study has an axial alternative, because the segmentation
model takes axial stacks. :func:`apply_roles` writes the result to
``Series.role`` and ``Series.role_evidence``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from config.roles import RoleRules
from db.models import Series, Study
from dicom_node.enhancement_check import EnhancementVerdict, SpoolImageComparator
from dicom_node.role_rules import (
    POINTS,
    Contrast,
    SeriesCandidate,
    SeriesFindings,
    Weighting,
    examine_series,
)
from inference.result import SequenceRole

logger = logging.getLogger(__name__)

ImageComparator = Callable[[SeriesCandidate, SeriesCandidate], EnhancementVerdict]
AMBIGUOUS = "ambiguous"

__all__ = [
    "AMBIGUOUS",
    "ImageComparator",
    "RoleAssignment",
    "SeriesCandidate",
    "apply_roles",
    "assign_roles",
    "candidates_for_study",
]


@dataclass(frozen=True)
class RoleAssignment:
    """The series chosen per role, the evidence per series and why a role has no series."""

    chosen: dict[SequenceRole, str]
    evidence: dict[str, dict[str, Any]]
    missing: dict[SequenceRole, str] = field(default_factory=dict)

    def role_of(self, series_instance_uid: str) -> SequenceRole | None:
        """Return the role given to a series, or None."""
        for role, uid in self.chosen.items():
            if uid == series_instance_uid:
                return role
        return None


def assign_roles(
    series_headers: Sequence[SeriesCandidate],
    rules: RoleRules | None = None,
    *,
    compare_images: ImageComparator | None = None,
) -> RoleAssignment:
    """Give each series of one study a role, or None, with the evidence.

    Parameters
    ----------
    series_headers : sequence of SeriesCandidate
        Every series of the study, with its header keyed by DICOM keyword.
    rules : RoleRules, optional
        Patterns and thresholds; the defaults when omitted.
    compare_images : callable, optional
        Decides which of two series is post-contrast from the pixels. Without
        it, series that only the pixels could tell apart get no role.
    """
    rules = rules or RoleRules()
    exam_protocol = _exam_level_protocol(series_headers)
    findings = [
        examine_series(candidate, rules, use_protocol_name=exam_protocol is None) for candidate in series_headers
    ]
    notes: dict[str, list[str]] = {item.uid: [] for item in findings}

    _contrast_by_order(findings)
    pools = _candidate_pools(findings)
    image_results = _resolve_unknown_t1(pools, compare_images, notes)

    chosen: dict[SequenceRole, str] = {}
    tie_breaks: dict[str, str] = {}
    for role in SequenceRole:
        winner = _choose(pools[role], tie_breaks, role_is_t2=role is SequenceRole.T2)
        if winner is not None:
            chosen[role] = winner.uid

    evidence = {
        item.uid: _evidence(item, chosen, pools, notes[item.uid], tie_breaks.get(item.uid), image_results.get(item.uid))
        for item in findings
    }
    _note_order_conflict(findings, chosen, evidence)
    if exam_protocol is not None:
        for record in evidence.values():
            record["notes"].append(f"ProtocolName '{exam_protocol}' is shared by every series, so it names the exam and is ignored")
    missing = {role: _missing_reason(role, findings, evidence) for role in SequenceRole if role not in chosen}
    return RoleAssignment(chosen=chosen, evidence=evidence, missing=missing)


def _note_order_conflict(
    findings: list[SeriesFindings], chosen: dict[SequenceRole, str], evidence: dict[str, dict[str, Any]]
) -> None:
    # A contrast agent cannot be taken back, so a CE-T1 acquired before the
    # T1 means a label or a time is wrong. The labels are kept, and both
    # series carry the warning for the reader of the report.
    by_uid = {item.uid: item for item in findings}
    if SequenceRole.CE_T1 not in chosen or SequenceRole.T1 not in chosen:
        return
    post, pre = by_uid[chosen[SequenceRole.CE_T1]], by_uid[chosen[SequenceRole.T1]]
    if post.acquisition_seconds is None or pre.acquisition_seconds is None:
        return
    if post.acquisition_seconds < pre.acquisition_seconds:
        warning = f"warning: the CE-T1 {post.label} was acquired before the T1 {pre.label}; check their labels"
        evidence[post.uid]["notes"].append(warning)
        evidence[pre.uid]["notes"].append(warning)
        logger.warning("CE-T1 series %s was acquired before T1 series %s", post.uid, pre.uid)


def _exam_level_protocol(candidates: Sequence[SeriesCandidate]) -> str | None:
    # GE scanners put the examination's protocol into every series'
    # ProtocolName. When two or more series share one, it carries no cue
    # about any single series.
    names = {str(candidate.header.get("ProtocolName") or "").strip() for candidate in candidates}
    if len(candidates) >= 2 and len(names) == 1:
        name = names.pop()
        return name or None
    return None


def _contrast_by_order(findings: list[SeriesFindings]) -> None:
    posts = [item for item in findings if item.contrast_is_explicit and item.contrast is Contrast.POST]
    pres = [item for item in findings if item.contrast_is_explicit and item.contrast is Contrast.PRE]
    for item in findings:
        if item.contrast is not Contrast.UNKNOWN or item.acquisition_seconds is None:
            continue
        earlier_post = [post for post in posts if post.acquisition_seconds is not None and post.acquisition_seconds < item.acquisition_seconds]
        later_pre = [pre for pre in pres if pre.acquisition_seconds is not None and pre.acquisition_seconds > item.acquisition_seconds]
        if earlier_post:
            first = min(earlier_post, key=lambda post: post.acquisition_seconds)
            item.contrast = Contrast.POST
            item.add_match(
                f"post-contrast by acquisition order: acquired after {first.label}, which had contrast",
                "AcquisitionTime",
                item.candidate.header.get("AcquisitionTime") or item.candidate.header.get("SeriesTime"),
                POINTS["order"],
                contrast_cue=True,
            )
        elif later_pre:
            last = max(later_pre, key=lambda pre: pre.acquisition_seconds)
            item.contrast = Contrast.PRE
            item.add_match(
                f"non-contrast by acquisition order: acquired before {last.label}, which had no contrast",
                "AcquisitionTime",
                item.candidate.header.get("AcquisitionTime") or item.candidate.header.get("SeriesTime"),
                POINTS["order"],
                contrast_cue=True,
            )


def _qualifies(item: SeriesFindings) -> bool:
    return not item.excluded and not item.rejected and item.weighting is not None


def _candidate_pools(findings: list[SeriesFindings]) -> dict[Any, list[SeriesFindings]]:
    pools: dict[Any, list[SeriesFindings]] = {role: [] for role in SequenceRole}
    pools[AMBIGUOUS] = []
    for item in findings:
        if not _qualifies(item):
            continue
        if item.weighting is Weighting.T2:
            pools[SequenceRole.T2].append(item)
        elif item.contrast is Contrast.POST:
            pools[SequenceRole.CE_T1].append(item)
        elif item.contrast is Contrast.PRE:
            pools[SequenceRole.T1].append(item)
        else:
            pools[AMBIGUOUS].append(item)
    return pools


def _resolve_unknown_t1(
    pools: dict[Any, list[SeriesFindings]],
    compare_images: ImageComparator | None,
    notes: dict[str, list[str]],
) -> dict[str, dict[str, Any]]:
    unknown = list(pools[AMBIGUOUS])
    posts, pres = pools[SequenceRole.CE_T1], pools[SequenceRole.T1]
    if not unknown:
        return {}

    if posts and pres:
        for item in unknown:
            notes[item.uid].append("ambiguous: T1-weighted without a contrast cue, and CE-T1 and T1 have labelled series")
        return {}

    if posts or pres:
        labelled = _choose(posts or pres, {})
        untimed = unknown
        if labelled.acquisition_seconds is not None:
            untimed = [item for item in unknown if item.acquisition_seconds is None]
            for item in unknown:
                if item.acquisition_seconds is not None:
                    _contrast_beside_labelled(item, labelled, pools)
        if not untimed:
            return {}
        if len(untimed) > 1:
            for item in untimed:
                notes[item.uid].append(
                    f"ambiguous: {len(untimed)} T1-weighted series without a contrast cue or acquisition time"
                )
            return {}
        pair = (untimed[0], labelled)
    elif len(unknown) == 1:
        notes[unknown[0].uid].append("ambiguous: T1-weighted without a contrast cue, and no second T1 series to compare with")
        return {}
    elif len(unknown) > 2:
        for item in unknown:
            notes[item.uid].append(
                f"ambiguous: {len(unknown)} T1-weighted series without a contrast cue; the image check compares one pair"
            )
        return {}
    else:
        pair = tuple(sorted(unknown, key=_acquisition_key))

    return _compare_pair(pair[0], pair[1], pools, compare_images, notes)


def _compare_pair(
    first: SeriesFindings,
    second: SeriesFindings,
    pools: dict[Any, list[SeriesFindings]],
    compare_images: ImageComparator | None,
    notes: dict[str, list[str]],
) -> dict[str, dict[str, Any]]:
    if compare_images is None:
        for item in (first, second):
            if item in pools[AMBIGUOUS]:
                notes[item.uid].append("ambiguous: T1-weighted without a contrast cue, and no image check was available")
        return {}

    verdict = compare_images(first.candidate, second.candidate)
    record = {"summary": verdict.summary, "compared": [first.uid, second.uid], **verdict.details}
    _apply_verdict(verdict, first, second, pools, notes)
    return {first.uid: record, second.uid: record}


def _contrast_beside_labelled(
    unknown: SeriesFindings, labelled: SeriesFindings, pools: dict[Any, list[SeriesFindings]]
) -> None:
    # _contrast_by_order already settled an unlabelled series acquired after an
    # explicitly post-contrast one or before an explicitly non-contrast one.
    # Sites label the series that differs, so an unlabelled T1 beside a
    # labelled CE-T1 is taken as the T1, and beside a labelled T1 as the CE-T1.
    if labelled.contrast is Contrast.POST:
        unknown.contrast, role, other = Contrast.PRE, SequenceRole.T1, "CE-T1"
        when = "before"
    else:
        unknown.contrast, role, other = Contrast.POST, SequenceRole.CE_T1, "T1"
        when = "after"
    unknown.add_match(
        f"{role.label} by acquisition order: no contrast cue, acquired {when} the labelled {other} {labelled.label}",
        "AcquisitionTime",
        unknown.candidate.header.get("AcquisitionTime") or unknown.candidate.header.get("SeriesTime"),
        POINTS["order"],
        contrast_cue=True,
    )
    pools[AMBIGUOUS].remove(unknown)
    pools[role].append(unknown)


def _apply_verdict(
    verdict: EnhancementVerdict,
    first: SeriesFindings,
    second: SeriesFindings,
    pools: dict[Any, list[SeriesFindings]],
    notes: dict[str, list[str]],
) -> None:
    unknown = [item for item in (first, second) if item in pools[AMBIGUOUS]]
    if verdict.post_contrast_uid is None:
        for item in unknown:
            notes[item.uid].append(f"ambiguous: {verdict.summary}")
        return

    post, pre = (first, second) if verdict.post_contrast_uid == first.uid else (second, first)
    conflict = _known_contradiction(post, pre)
    if conflict:
        for item in unknown:
            notes[item.uid].append(f"ambiguous: {verdict.summary}, but {conflict}")
        return

    for item, contrast, role in ((post, Contrast.POST, SequenceRole.CE_T1), (pre, Contrast.PRE, SequenceRole.T1)):
        if item not in unknown:
            continue
        item.contrast = contrast
        item.add_match(verdict.summary, "PixelData", None, POINTS["image"], contrast_cue=True)
        pools[AMBIGUOUS].remove(item)
        pools[role].append(item)


def _known_contradiction(post: SeriesFindings, pre: SeriesFindings) -> str | None:
    if post.contrast_is_explicit and post.contrast is Contrast.PRE:
        return f"{post.label} is labelled non-contrast"
    if pre.contrast_is_explicit and pre.contrast is Contrast.POST:
        return f"{pre.label} is labelled post-contrast"
    if (
        post.acquisition_seconds is not None
        and pre.acquisition_seconds is not None
        and post.acquisition_seconds < pre.acquisition_seconds
    ):
        return f"{post.label} was acquired before {pre.label}"
    return None


def _acquisition_key(item: SeriesFindings) -> tuple[float, int, str]:
    return (
        item.acquisition_seconds if item.acquisition_seconds is not None else float("inf"),
        _series_number(item),
        item.uid,
    )


def _series_number(item: SeriesFindings) -> int:
    try:
        return int(item.candidate.header.get("SeriesNumber"))
    except (TypeError, ValueError):
        return -1


def _criteria(role_is_t2: bool) -> list[tuple[str, Callable[[SeriesFindings], Any]]]:
    # In order of precedence, each with the phrase for the tie-break note.
    # Contrast cues do not rank T2 series, so a post-contrast T2 does not
    # win over the usual pre-contrast one for carrying an agent.
    return [
        ("a complete slice stack", lambda item: item.candidate.stack_complete is True),
        ("a higher score", lambda item: item.score_for(role_is_t2)),
        ("a later acquisition", lambda item: item.acquisition_seconds if item.acquisition_seconds is not None else -1.0),
        ("a higher SeriesNumber", _series_number),
        ("more instances", lambda item: item.candidate.instance_count),
    ]


def _choose(
    pool: list[SeriesFindings], tie_breaks: dict[str, str], *, role_is_t2: bool = False
) -> SeriesFindings | None:
    if not pool:
        return None
    criteria = _criteria(role_is_t2)

    def key(item: SeriesFindings) -> tuple[Any, ...]:
        # _ReversedText ranks the lower UID first in this descending sort.
        return (*(criterion(item) for _, criterion in criteria), _ReversedText(item.uid))

    ranked = sorted(pool, key=key, reverse=True)
    winner = ranked[0]
    for other in ranked[1:]:
        reason = next(
            (phrase for phrase, criterion in criteria if criterion(winner) != criterion(other)),
            "the lower SeriesInstanceUID",
        )
        tie_breaks.setdefault(winner.uid, "")
        tie_breaks[winner.uid] += f"chosen over {other.label}: {reason}; "
        tie_breaks[other.uid] = f"not chosen: {winner.label} has {reason}"
    if winner.uid in tie_breaks:
        tie_breaks[winner.uid] = tie_breaks[winner.uid].rstrip("; ")
    return winner


class _ReversedText(str):
    """A string that sorts in reverse, so the lower UID ranks first in a descending sort."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:
        return str.__lt__(self, other)


def _evidence(
    item: SeriesFindings,
    chosen: dict[SequenceRole, str],
    pools: dict[Any, list[SeriesFindings]],
    notes: list[str],
    tie_break: str | None,
    image_check: dict[str, Any] | None,
) -> dict[str, Any]:
    role = next((role for role, uid in chosen.items() if uid == item.uid), None)
    candidate_for = [role.value for role in SequenceRole if item in pools[role]]
    rejected = [*item.excluded, *item.rejected, *notes]
    evidence: dict[str, Any] = {
        "role": None if role is None else role.value,
        "score": item.score_for(item in pools[SequenceRole.T2]),
        "summary": _summary(item, role, rejected, tie_break),
        "matched": item.matched,
        "rejected": rejected,
        "candidate_for": candidate_for,
        "tie_break": tie_break,
        "notes": [],
        "findings": {
            "orientation": None if item.orientation is None else item.orientation.value,
            "weighting": None if item.weighting is None else item.weighting.value,
            "contrast": item.contrast.value,
            "fat_suppressed": item.fat_suppressed,
        },
    }
    if image_check is not None:
        evidence["image_check"] = image_check
    return evidence


def _summary(item: SeriesFindings, role: SequenceRole | None, rejected: list[str], tie_break: str | None) -> str:
    if role is None:
        if tie_break:
            return tie_break
        return "no role: " + ("; ".join(rejected) if rejected else "no rule matched")
    cues = [_cue_text(match) for match in item.matched if match["rule"] != "fat-suppressed"]
    text = f"{role.label}: " + "; ".join(cues)
    if item.fat_suppressed:
        text += "; fat-suppressed"
    return text


def _cue_text(match: dict[str, Any]) -> str:
    value = match["value"]
    if isinstance(value, (str, int, float)) and len(str(value)) <= 40:
        return f"{match['rule']} ({match['keyword']} '{value}')"
    return f"{match['rule']} ({match['keyword']})"


def _missing_reason(role: SequenceRole, findings: list[SeriesFindings], evidence: dict[str, dict[str, Any]]) -> str:
    if not findings:
        return f"no series matched {role.label}: the study has no series"
    described = []
    for item in findings[:12]:
        reasons = evidence[item.uid]["rejected"]
        role_given = evidence[item.uid]["role"]
        if role_given is not None:
            reason = f"taken as {SequenceRole(role_given).label}"
        elif reasons:
            reason = reasons[0]
        else:
            reason = evidence[item.uid]["tie_break"] or "no rule matched"
        described.append(f"{item.label}: {reason}")
    more = f"; and {len(findings) - 12} more" if len(findings) > 12 else ""
    return f"no series matched {role.label} (candidates: " + "; ".join(described) + more + ")"


def candidates_for_study(study: Study, stack_complete: dict[str, bool] | None = None) -> list[SeriesCandidate]:
    """Build the role candidates of a study from its ``Series`` rows."""
    stack_complete = stack_complete or {}
    return [
        SeriesCandidate(
            series_instance_uid=series.series_instance_uid,
            header=series.header or {},
            instance_count=series.instance_count,
            stack_complete=stack_complete.get(series.series_instance_uid),
        )
        for series in study.series
    ]


def instance_paths(study: Study) -> dict[str, list[str]]:
    """Relative spool paths of the stored instances per SeriesInstanceUID, without conflicting copies."""
    return {
        series.series_instance_uid: [instance.path for instance in series.instances if not instance.is_conflict]
        for series in study.series
    }


def apply_roles(
    session: Session,
    study: Study,
    *,
    rules: RoleRules | None = None,
    spool_dir: Path | None = None,
    stack_complete: dict[str, bool] | None = None,
) -> RoleAssignment:
    """Assign roles to the series of ``study`` and write ``Series.role`` and ``Series.role_evidence``.

    With ``spool_dir`` set, series that only their pixels can tell apart are
    compared by :class:`~dicom_node.enhancement_check.SpoolImageComparator`.
    The session is flushed, not committed.
    """
    rules = rules or RoleRules()
    comparator = None
    if spool_dir is not None and rules.enhancement.enabled:
        comparator = SpoolImageComparator(spool_dir, instance_paths(study), rules.enhancement)
    assignment = assign_roles(candidates_for_study(study, stack_complete), rules, compare_images=comparator)
    write_roles(session, study, assignment)
    return assignment


def write_roles(session: Session, study: Study, assignment: RoleAssignment) -> None:
    """Store an assignment on the study's ``Series`` rows and flush."""
    for series in study.series:
        evidence = assignment.evidence.get(series.series_instance_uid, {})
        role = assignment.role_of(series.series_instance_uid)
        series.role = None if role is None else role.value
        series.role_evidence = evidence
    session.flush()
    logger.info(
        "study %s roles: %s; missing: %s",
        study.study_instance_uid,
        {role.value: uid for role, uid in assignment.chosen.items()},
        [role.value for role in assignment.missing] or "none",
    )
