"""SQLAlchemy models of the job database.

Column names are snake_case copies of the DICOM keywords they store. Patient
name and ID are stored for the dashboard's optional display, and never logged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.states import DeliveryState, JobState, OutputKind, StudyState

UID_LENGTH = 64
AE_LENGTH = 16


def utcnow() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def _enum(enum_class: type) -> Enum:
    # Store the enum's value ("queued"), not its name, as a plain string
    # column, so adding a state needs no ALTER TYPE on PostgreSQL.
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    """Declarative base of all tables."""

    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Study(Base):
    """A study the node has received instances of."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    patient_name: Mapped[str | None] = mapped_column(String(324))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_description: Mapped[str | None] = mapped_column(String(256))
    specific_character_set: Mapped[str | None] = mapped_column(String(128))
    calling_ae_title: Mapped[str | None] = mapped_column(String(AE_LENGTH), index=True)
    calling_host: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[StudyState] = mapped_column(_enum(StudyState), default=StudyState.RECEIVING)
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    has_conflicts: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[dict[str, Any]] = mapped_column(default=dict)

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    jobs: Mapped[list[Job]] = relationship(back_populates="study", order_by="Job.id")


class Series(Base):
    """A series of a study, with the role it was given and the evidence for it."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    sop_class_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(256))
    protocol_name: Mapped[str | None] = mapped_column(String(256))
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH))
    header: Mapped[dict[str, Any]] = mapped_column(default=dict)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    role: Mapped[str | None] = mapped_column(String(16))
    role_evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.id")


class Instance(Base):
    """A stored SOP instance. ``path`` is relative to the spool folder."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "sha256", name="uq_instance_content"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    image_orientation_patient: Mapped[list[float] | None] = mapped_column(JSON)
    # One [x, y, z] ImagePositionPatient per frame, in frame order; a single
    # entry for single-frame instances.
    frame_positions: Mapped[list[list[float]] | None] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    is_conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    calling_ae_title: Mapped[str | None] = mapped_column(String(AE_LENGTH))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One pipeline run for a study."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    run_number: Mapped[int] = mapped_column(Integer, default=1)
    supersedes_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.WAITING)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column()
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()
    reason_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    hint: Mapped[str | None] = mapped_column(Text)
    input_series: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result_summary: Mapped[dict[str, Any]] = mapped_column(default=dict)

    study: Mapped[Study] = relationship(back_populates="jobs")
    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")
    outputs: Mapped[list[Output]] = relationship(back_populates="job", order_by="Output.id")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="job", order_by="Delivery.id")


class JobEvent(Base):
    """A state change or action on a job, with its time, reason and actor."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="node")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    job: Mapped[Job] = relationship(back_populates="events")


class Output(Base):
    """A DICOM object the node produced for a job. ``path`` is absolute."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[OutputKind] = mapped_column(_enum(OutputKind))
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="outputs")


class Delivery(Base):
    """The outbox entry: one job's outputs for one destination."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "destination", name="uq_delivery_job_destination"),
        Index("ix_deliveries_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str] = mapped_column(String(AE_LENGTH))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Output kinds (OutputKind values) this destination receives, fixed when
    # the delivery is created so a later change of settings does not change
    # what a retry sends.
    output_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column()

    job: Mapped[Job] = relationship(back_populates="deliveries")
    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.id"
    )


class DeliveryAttempt(Base):
    """One try at sending a delivery, with the DIMSE status or network error."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(32))
    status: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    duration_s: Mapped[float | None] = mapped_column(Float)

    delivery: Mapped[Delivery] = relationship(back_populates="attempt_log")
