"""Versioned messages and records that flow between functions.

Every queue body is one of these dataclasses serialised with ``to_json``. The first key of
every message is ``"schema"`` and the second ``"version"``: a consumer refuses a message
whose schema or version it does not know (it goes to the error table and the poison queue,
never half-processed). The incident request is also the manual-injection and HTTP schema.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .timestamps import iso_exact, iso_seconds, parse_timestamp, utcnow
from .validation import ValidationError, clean_text, excerpt, normalize_guid, normalize_upn

__all__ = [
    "MessageError",
    "IncidentRequest",
    "StepTask",
    "OnPremResetRequest",
    "OperatorTask",
    "OPERATOR_ACTIONS",
    "RISK_LEVELS",
    "SOURCES",
    "MAX_MESSAGE_BYTES",
    "utcnow_iso",
    "new_incident_id",
    "new_correlation_id",
]

RISK_LEVELS = ("none", "low", "medium", "high", "unknown")
SOURCES = (
    "manual",
    "http",
    "entra-diagnostics",
    "defender-stream",
    "graph-riskyusers",
    "graph-alerts",
)
# Azure Storage queues hold at most 64 KiB per message; anything larger is not ours.
MAX_MESSAGE_BYTES = 64 * 1024
_MAX_ALERT_IDS = 100
_MAX_ALERT_ID_LEN = 200
_MAX_REASON_LEN = 500


class MessageError(ValidationError):
    """A message could not be decoded or failed its schema. The text is safe to log."""


def utcnow_iso() -> str:
    return iso_seconds(utcnow())


def _timestamp(value: object) -> datetime:
    """parse_timestamp for a message field: a MessageError that quotes (an excerpt of) the value."""
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise MessageError(f"{exc}: {excerpt(value)}") from None


def new_incident_id() -> str:
    return "inc-" + uuid.uuid4().hex[:20]


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def _load(body: str | bytes, schema: str) -> dict[str, Any]:
    if isinstance(body, bytes):
        if len(body) > MAX_MESSAGE_BYTES:
            raise MessageError(f"message is {len(body)} bytes, over the {MAX_MESSAGE_BYTES} limit")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError("message is not UTF-8 text") from exc
    try:
        encoded_length = len(body.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored or forwarded
        raise MessageError("message holds characters that are not valid Unicode") from exc
    if encoded_length > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is over the {MAX_MESSAGE_BYTES} byte limit")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and ints past the digit limit
        raise MessageError(f"message is not JSON: {exc.__class__.__name__}") from exc
    if not isinstance(data, dict):
        raise MessageError(f"message must be a JSON object, got {type(data).__name__}")
    got_schema = data.get("schema", schema)
    if got_schema != schema:
        raise MessageError(f"unexpected schema {excerpt(got_schema)}, expected {schema!r}")
    version = data.get("version")
    if version != 1 or isinstance(version, bool):
        raise MessageError(f"unsupported {schema} version {excerpt(version)} (supported: 1)")
    return data


def _opt_str(data: dict[str, Any], key: str, limit: int = 256) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise MessageError(f"{key} must be a string of at most {limit} characters: {excerpt(value)}")
    return value


@dataclass(frozen=True)
class IncidentRequest:
    """One compromised-user signal, normalised from any source.

    This is the body of a manual message on the alerts queue and of POST /api/incidents.
    At least one of user_id (Entra object id, a GUID) or user_principal_name is required.
    """

    SCHEMA = "breach-responder/incident-request"

    user_id: str | None
    user_principal_name: str | None
    source: str = "manual"
    risk_level: str = "high"
    alert_ids: tuple[str, ...] = ()
    detected_at: str = field(default_factory=utcnow_iso)
    reason: str = ""
    # Identity Protection's riskDetail (riskyUser) or riskEventType (detection), when the source has
    # one: lets intake recognise the responder's own confirmCompromised coming back ("" = unknown).
    risk_detail: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if self.user_id is None and self.user_principal_name is None:
            raise MessageError("incident request names no user (user_id or user_principal_name required)")
        if self.user_id is not None:
            object.__setattr__(self, "user_id", normalize_guid(self.user_id, "user_id"))
        if self.user_principal_name is not None:
            object.__setattr__(
                self, "user_principal_name", normalize_upn(self.user_principal_name)
            )
        if self.source not in SOURCES:
            raise MessageError(f"unknown source {excerpt(self.source)} (one of {', '.join(SOURCES)})")
        if self.risk_level not in RISK_LEVELS:
            raise MessageError(f"unknown risk_level {excerpt(self.risk_level)} (one of {', '.join(RISK_LEVELS)})")
        ids = tuple(self.alert_ids)
        if len(ids) > _MAX_ALERT_IDS or any(
            not isinstance(a, str) or not a or len(a) > _MAX_ALERT_ID_LEN for a in ids
        ):
            raise MessageError("alert_ids must be a list of at most 100 non-empty strings")
        # Free text reaches ledger rows, logs and the SOC mail: control and format characters
        # (newlines, NUL, escape sequences, bidi overrides) are stripped, lengths are capped.
        cleaned = (clean_text(a, _MAX_ALERT_ID_LEN) for a in ids)
        object.__setattr__(self, "alert_ids", tuple(dict.fromkeys(a for a in cleaned if a)))
        object.__setattr__(self, "detected_at", iso_exact(_timestamp(self.detected_at)))
        if not isinstance(self.reason, str) or len(self.reason) > _MAX_REASON_LEN:
            raise MessageError(f"reason must be a string of at most {_MAX_REASON_LEN} characters")
        object.__setattr__(self, "reason", clean_text(self.reason, _MAX_REASON_LEN))
        if not isinstance(self.risk_detail, str) or len(self.risk_detail) > 64 or not all(
                c.isalnum() for c in self.risk_detail):
            raise MessageError("risk_detail must be letters and digits only, at most 64 characters")

    @property
    def user_key(self) -> str:
        """The key one user's open incident is found by: object id if known, else the UPN."""
        return self.user_id or str(self.user_principal_name)

    def to_dict(self) -> dict[str, Any]:
        data = {"schema": self.SCHEMA, "version": self.version}
        data.update({k: v for k, v in asdict(self).items() if k != "version"})
        data["alert_ids"] = list(self.alert_ids)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IncidentRequest":
        known = {"schema", "version", "user_id", "user_principal_name", "source", "risk_level",
                 "alert_ids", "detected_at", "reason", "risk_detail"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MessageError(f"unknown field(s) in incident request: {excerpt(unknown, 80)}")
        alert_ids = data.get("alert_ids") or []
        if not isinstance(alert_ids, list):
            raise MessageError("alert_ids must be a list")
        kwargs: dict[str, Any] = {
            "user_id": _opt_str(data, "user_id"),
            "user_principal_name": _opt_str(data, "user_principal_name", 400),
            "source": data.get("source", "manual"),
            "risk_level": data.get("risk_level", "high"),
            "alert_ids": tuple(alert_ids),
            "reason": data.get("reason") or "",
            "risk_detail": data.get("risk_detail") or "",
        }
        detected = _opt_str(data, "detected_at", 64)
        if detected:
            kwargs["detected_at"] = detected
        try:
            return cls(**kwargs)
        except MessageError:
            raise
        except ValidationError as exc:
            raise MessageError(str(exc)) from exc

    @classmethod
    def from_json(cls, body: str | bytes) -> "IncidentRequest":
        return cls.from_dict(_load(body, cls.SCHEMA))


@dataclass(frozen=True)
class StepTask:
    """The message on queue ``step-<name>``: run one step of one incident."""

    SCHEMA = "breach-responder/step-task"

    incident_id: str
    step: str
    user_key: str
    correlation_id: str
    enqueued_at: str = field(default_factory=utcnow_iso)
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("incident_id", "step", "user_key", "correlation_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 400:
                raise MessageError(f"step task field {name} must be a non-empty string")
        if not self.incident_id.startswith("inc-") or not self.incident_id[4:].isalnum():
            raise MessageError(f"malformed incident_id {excerpt(self.incident_id)}")

    def to_json(self) -> str:
        data = {"schema": self.SCHEMA, "version": self.version}
        data.update({k: v for k, v in asdict(self).items() if k != "version"})
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str | bytes) -> "StepTask":
        data = _load(body, cls.SCHEMA)
        fields = ("incident_id", "step", "user_key", "correlation_id", "enqueued_at")
        unknown = sorted(set(data) - set(fields) - {"schema", "version"})
        if unknown:
            raise MessageError(f"unknown field(s) in step task: {excerpt(unknown, 80)}")
        try:
            return cls(**{k: data[k] for k in fields if k in data})
        except TypeError as exc:
            raise MessageError("step task is missing a required field") from exc


OPERATOR_ACTIONS = ("enable-sign-in", "undo")
MAX_CONFIRMED = 10


@dataclass(frozen=True)
class OperatorTask:
    """The message on the ``operator-actions`` queue: an operator asked the worker (which holds the
    managed identity) to do something for one incident: ``enable-sign-in`` re-enables an account the
    responder blocked (BLOCK_SIGN_IN=until-approved). Written by ``responder enable-sign-in`` and
    ``POST /api/incidents/{id}/enable-sign-in``; ``undo`` reverses a false positive's changes
    (shared/undo.py; ``confirmed`` = the forwarding addresses the operator confirmed one by one)."""

    SCHEMA = "breach-responder/operator-task"

    incident_id: str
    action: str
    requested_by: str
    correlation_id: str
    requested_at: str = field(default_factory=utcnow_iso)
    confirmed: tuple[str, ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.confirmed, list):
            object.__setattr__(self, "confirmed", tuple(self.confirmed))
        if not isinstance(self.confirmed, tuple) or len(self.confirmed) > MAX_CONFIRMED or not all(
                isinstance(c, str) and 0 < len(c) <= 320 for c in self.confirmed):
            raise MessageError(f"operator task field confirmed must be at most {MAX_CONFIRMED} strings")
        for name in ("incident_id", "action", "requested_by", "correlation_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 400:
                raise MessageError(f"operator task field {name} must be a non-empty string")
        if not self.incident_id.startswith("inc-") or not self.incident_id[4:].isalnum():
            raise MessageError(f"malformed incident_id {excerpt(self.incident_id)}")
        if self.action not in OPERATOR_ACTIONS:
            raise MessageError(f"unknown operator action {excerpt(self.action)}")

    def to_json(self) -> str:
        data = {"schema": self.SCHEMA, "version": self.version}
        data.update({k: (list(v) if k == "confirmed" else v) for k, v in asdict(self).items()
                     if k != "version" and not (k == "confirmed" and not v)})
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str | bytes) -> "OperatorTask":
        data = _load(body, cls.SCHEMA)
        fields = ("incident_id", "action", "requested_by", "correlation_id", "requested_at", "confirmed")
        unknown = sorted(set(data) - set(fields) - {"schema", "version"})
        if unknown:
            raise MessageError(f"unknown field(s) in operator task: {excerpt(unknown, 80)}")
        try:
            return cls(**{k: data[k] for k in fields if k in data})
        except TypeError as exc:
            raise MessageError("operator task is missing a required field") from exc


@dataclass(frozen=True)
class OnPremResetRequest:
    """The message on ``ONPREM_RESET_QUEUE``: a hybrid worker resets this user's password in
    on-premises AD (Entra refuses a cloud reset of a synced or federated user). It carries no
    password: the worker generates one and follows the help desk's hand-off."""

    SCHEMA = "breach-responder/onprem-reset"

    incident_id: str
    user_id: str
    user_principal_name: str
    on_premises_sam_account_name: str
    on_premises_domain_name: str
    reason: str
    requested_at: str = field(default_factory=utcnow_iso)
    version: int = 1

    def to_json(self) -> str:
        data = {"schema": self.SCHEMA, "version": self.version}
        data.update({k: v for k, v in asdict(self).items() if k != "version"})
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str | bytes) -> "OnPremResetRequest":
        data = _load(body, cls.SCHEMA)
        fields = ("incident_id", "user_id", "user_principal_name", "on_premises_sam_account_name",
                  "on_premises_domain_name", "reason", "requested_at")
        unknown = sorted(set(data) - set(fields) - {"schema", "version"})
        if unknown:
            raise MessageError(f"unknown field(s) in on-premises reset request: {excerpt(unknown, 80)}")
        try:
            return cls(**{k: data[k] for k in fields if k in data})
        except TypeError as exc:
            raise MessageError("on-premises reset request is missing a required field") from exc
