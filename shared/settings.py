"""App settings, read once from the environment (Azure app settings / local.settings.json).

Every key read here is listed in local.settings.sample.json with a safe default, and in
infra/ as an app setting. Invalid values raise ConfigError at start-up, naming the key.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigError

GRAPH_DEFAULT = "https://graph.microsoft.com"
EXO_DEFAULT = "https://outlook.office365.com"
MODES = ("auto", "approval", "dry-run")
MFA_MODES = ("ca-group", "per-user")
SYNCED_POLICIES = ("continue", "hold")
# What "registered after the compromise" means for enforce-mfa (README, "Attacker methods"):
# the earliest risk detection, the earliest risky sign-in, or the last AUTH_METHOD_LOOKBACK_HOURS.
METHOD_CUTOFFS = ("first-risk-detection", "first-risky-sign-in", "lookback")
# The storm breaker keeps every reservation of its window in one table row (shared/storm.py).
MAX_STORM_THRESHOLD = 3000
# Whether containment also blocks sign-in (accountEnabled false), and until when (README,
# "Sign-in block"): never (default), until the incident closes, or until an operator re-enables it.
SIGN_IN_BLOCKS = ("never", "until-close", "until-approved")
# The way back in for a remediated user (README, "Recovery hand-off"): nothing (default), or a one-time
# Temporary Access Pass mailed to the help desk or the user's manager (never to the user's own mailbox).
RECOVERY_MODES = ("none", "tap")
RECOVERY_RECIPIENTS = ("helpdesk", "manager")
# Graph's bounds for lifetimeInMinutes (the tenant's TAP policy narrows them; the step reads it).
TAP_LIFETIME_RANGE = (10, 43200)

# Every setting the code reads, with its safe default. Kept in step with
# local.settings.sample.json by a test.
DEFAULTS: dict[str, str] = {
    "RESPONDER_MODE": "approval",
    "PLAYBOOK_STEPS": "snapshot,reset-password,enforce-mfa,clean-mailbox,remove-delegates,revoke-app-consent,"
                      "unblock-sender,mailbox-audit,close",
    "ALERTS_QUEUE": "alerts",
    "TENANT_ID": "",
    "TENANT_DOMAIN": "",
    "GRAPH_BASE_URL": GRAPH_DEFAULT,
    "EXO_BASE_URL": EXO_DEFAULT,
    "GRAPH_TIMEOUT_SECONDS": "30",
    "PROTECTED_GROUP_ID": "",
    "PROTECTED_USERS": "",
    "MFA_MODE": "ca-group",
    "MFA_GROUP_ID": "",
    "REMOVE_NEW_AUTH_METHODS": "true",
    "SOC_MAILBOX": "",
    "NOTIFY_SENDER": "",
    "SYNCED_USER_POLICY": "continue",
    "REVOKE_WHILE_HELD": "true",
    "ONPREM_RESET_QUEUE": "",
    "AUTH_METHOD_CUTOFF": "first-risk-detection",
    "AUTH_METHOD_LOOKBACK_HOURS": "72",
    "BLOCK_SIGN_IN": "never",
    "REMOVE_APP_ROLE_ASSIGNMENTS": "false",
    "RECOVERY": "none",
    "RECOVERY_DELIVER_TO": "helpdesk",
    "RECOVERY_HELPDESK_MAILBOX": "",
    "RECOVERY_TAP_LIFETIME_MINUTES": "60",
    "CONSOLE_BASE_URL": "",
    "STORM_THRESHOLD": "50",
    "STORM_WINDOW_MINUTES": "10",
    "STORM_SOURCE_QUOTA": "25",
    "MIN_RISK_LEVEL": "medium",
    "LOOKBACK_DAYS": "30",
    "HOLD_TTL_HOURS": "24",
    "HOLD_EXPIRY_SCHEDULE": "0 */10 * * * *",
    "KEY_ONLY_INTAKE": "false",
    "STEP_LEASE_SECONDS": "120",
    "POLL_SCHEDULE": "0 */5 * * * *",
    "ENTRA_EVENTHUB_NAME": "entra-risk",
    "DEFENDER_EVENTHUB_NAME": "defender-alerts",
    "SECURE_SCORE_SCHEDULE": "0 30 6 * * *",
    "SECURE_SCORE_MIN_DROP_POINTS": "5",
    "SECURE_SCORE_NOTIFY": "false",
    "REDRIVE_SCHEDULE": "0 */2 * * * *",
    "REDRIVE_MAX": "3",
    # Identity Protection calls of incidents that close together go in one call, one per this many
    # seconds while busy (shared/tenant_calls.py); detections are read this far back in bulk.
    "IDP_BATCH_SECONDS": "20",
    "INTAKE_CONCURRENCY": "8",
    # The protection gate runs before every step that changes the tenant; its Graph lookups (groups,
    # active and eligible roles: 3 reads) are reused for this many seconds (0: read before every step).
    "GATE_FACTS_MAX_AGE_SECONDS": "60",
    "RISK_DETECTION_LOOKBACK_DAYS": "30",
    # Pacing per Microsoft service (shared/adapters/pacing.py): the published quotas, and how
    # many worker instances share them. Lower a number when other apps use the same quota.
    "PACING_INSTANCES": "1",
    "PACING_DIRECTORY_RU_PER_10S": "3500",
    "PACING_DIRECTORY_WRITES_PER_150S": "3000",
    "PACING_TENANT_WRITES_PER_300S": "18000",
    "PACING_DIRECTORY_WRITE_SHARE": "1",
    "PACING_IDP_PER_S": "1",
    "PACING_REPORTS_PER_10S": "5",
    "PACING_SECURITY_PER_MIN": "150",
    "PACING_OUTLOOK_PER_10MIN": "10000",
    "PACING_OUTLOOK_CONCURRENCY": "4",
    "PACING_EXO_PER_10S": "300",
    "PACING_EXO_CONCURRENCY": "10",
}

# PACING_* setting -> (PacingLimits field, minimum)
PACING_FIELDS: dict[str, tuple[str, float]] = {
    "PACING_INSTANCES": ("instances", 1),
    "PACING_DIRECTORY_RU_PER_10S": ("directory_ru_per_10s", 1),
    "PACING_DIRECTORY_WRITES_PER_150S": ("directory_writes_per_150s", 1),
    "PACING_TENANT_WRITES_PER_300S": ("tenant_writes_per_300s", 1),
    "PACING_DIRECTORY_WRITE_SHARE": ("directory_write_share", 0.001),
    "PACING_IDP_PER_S": ("idp_per_s", 0.01),
    "PACING_REPORTS_PER_10S": ("reports_per_10s", 0.1),
    "PACING_SECURITY_PER_MIN": ("security_per_min", 1),
    "PACING_OUTLOOK_PER_10MIN": ("outlook_per_10min", 1),
    "PACING_OUTLOOK_CONCURRENCY": ("outlook_concurrency", 1),
    "PACING_EXO_PER_10S": ("exo_per_10s", 1),
    "PACING_EXO_CONCURRENCY": ("exo_concurrency", 1),
}
_INT_PACING = {"PACING_INSTANCES", "PACING_OUTLOOK_CONCURRENCY", "PACING_EXO_CONCURRENCY"}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(key: str, value: str, default: str) -> str:
    """Accept the real service URL, or an http(s) override on a loopback host only."""
    value = value.rstrip("/")
    if value == default:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{key} override refused: only {default} or a loopback URL "
            f"(localhost, 127.0.0.1, ::1) is allowed, got host {parts.hostname!r}"
        )
    return value


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _int(key: str, value: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{key} must be at most {maximum}, got {number}")
    return number


def _number(key: str, value: str, minimum: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if not number >= minimum or number == float("inf"):
        raise ConfigError(f"{key} must be at least {minimum:g}, got {value!r}")
    return number


def _pacing(values: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, (name, minimum) in PACING_FIELDS.items():
        out[name] = _int(key, values[key], int(minimum)) if key in _INT_PACING else _number(key, values[key], minimum)
    if out["directory_write_share"] > 1:
        raise ConfigError(f"PACING_DIRECTORY_WRITE_SHARE must be at most 1, got {values['PACING_DIRECTORY_WRITE_SHARE']!r}")
    return out


def _choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def _queue_name(key: str, value: str) -> str:
    """An Azure Storage queue name (3-63 lower-case letters, digits, single hyphens), or '' for off."""
    value = value.strip()
    if value and not _QUEUE_NAME.match(value):
        raise ConfigError(f"{key} must be a storage queue name (lower-case letters, digits, hyphens), got {value!r}")
    return value


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_MAILBOX = re.compile(r"^[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def _mailbox(key: str, value: str) -> str:
    """An SMTP address, or '' for none."""
    value = value.strip()
    if value and not _MAILBOX.match(value):
        raise ConfigError(f"{key} must be an e-mail address, got {value!r}")
    return value


def console_base_url(value: str) -> str:
    """CONSOLE_BASE_URL: where operators reach the console (the SOC mail links to it). An https URL
    without query or fragment (http only on a loopback host, for the local stack); '' = derive it from
    the platform's WEBSITE_HOSTNAME at run time (shared/console/links.py)."""
    value = value.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.query or parts.fragment or parts.username or parts.password or not parts.hostname:
        raise ConfigError(f"CONSOLE_BASE_URL must be a plain https URL (no query, fragment or credentials), got {value!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise ConfigError(f"CONSOLE_BASE_URL must use https (http only on a loopback host), got {value!r}")
    return value


def effective_playbook(steps: tuple[str, ...], recovery: str) -> tuple[str, ...]:
    """PLAYBOOK_STEPS with ``recovery-pass`` put before ``close`` (or last) when RECOVERY=tap and the
    playbook does not name it (infra/main.bicep does the same when it decides what to grant)."""
    if recovery != "tap" or "recovery-pass" in steps:
        return steps
    if "close" in steps:
        at = steps.index("close")
        return steps[:at] + ("recovery-pass",) + steps[at:]
    return steps + ("recovery-pass",)


@dataclass(frozen=True)
class Settings:
    mode: str
    playbook_steps: tuple[str, ...]
    alerts_queue: str
    tenant_id: str
    tenant_domain: str
    graph_base_url: str
    exo_base_url: str
    graph_timeout_s: float
    protected_group_id: str
    protected_users: frozenset[str]
    mfa_mode: str
    mfa_group_id: str
    remove_new_auth_methods: bool
    soc_mailbox: str
    notify_sender: str
    synced_user_policy: str
    revoke_while_held: bool
    onprem_reset_queue: str
    auth_method_cutoff: str
    auth_method_lookback_hours: int
    block_sign_in: str
    remove_app_role_assignments: bool
    recovery: str
    recovery_deliver_to: str
    recovery_helpdesk_mailbox: str
    recovery_tap_lifetime_minutes: int
    console_base_url: str
    storm_threshold: int
    storm_window_minutes: int
    storm_source_quota: int
    min_risk_level: str
    lookback_days: int
    hold_ttl_hours: int
    key_only_intake: bool
    step_lease_s: int
    redrive_max: int
    idp_batch_s: float = 20.0
    intake_concurrency: int = 8
    gate_facts_max_age_s: int = 60
    risk_detection_lookback_days: int = 30
    pacing: Mapping[str, float] = field(default_factory=dict)  # PacingLimits fields (PACING_FIELDS)
    raw: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def graph_is_local(self) -> bool:
        return self.graph_base_url != GRAPH_DEFAULT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        source = os.environ if env is None else env
        values = {key: source.get(key, default) for key, default in DEFAULTS.items()}
        from .playbook import validate_order  # local import: playbook imports nothing from here

        recovery = _choice("RECOVERY", values["RECOVERY"].strip(), RECOVERY_MODES)
        steps = validate_order(effective_playbook(_csv(values["PLAYBOOK_STEPS"]), recovery))
        from .model import RISK_LEVELS

        deliver_to = _choice("RECOVERY_DELIVER_TO", values["RECOVERY_DELIVER_TO"].strip(), RECOVERY_RECIPIENTS)
        helpdesk = _mailbox("RECOVERY_HELPDESK_MAILBOX", values["RECOVERY_HELPDESK_MAILBOX"])
        if recovery == "tap" and not helpdesk and deliver_to == "helpdesk":
            raise ConfigError("RECOVERY=tap with RECOVERY_DELIVER_TO=helpdesk needs RECOVERY_HELPDESK_MAILBOX "
                              "(the pass is never mailed to the user's own mailbox)")

        return cls(
            mode=_choice("RESPONDER_MODE", values["RESPONDER_MODE"], MODES),
            playbook_steps=steps,
            alerts_queue=values["ALERTS_QUEUE"],
            tenant_id=values["TENANT_ID"],
            tenant_domain=values["TENANT_DOMAIN"],
            graph_base_url=validate_base_url("GRAPH_BASE_URL", values["GRAPH_BASE_URL"], GRAPH_DEFAULT),
            exo_base_url=validate_base_url("EXO_BASE_URL", values["EXO_BASE_URL"], EXO_DEFAULT),
            graph_timeout_s=float(_int("GRAPH_TIMEOUT_SECONDS", values["GRAPH_TIMEOUT_SECONDS"], 1)),
            protected_group_id=values["PROTECTED_GROUP_ID"].strip(),
            protected_users=frozenset(u.lower() for u in _csv(values["PROTECTED_USERS"])),
            mfa_mode=_choice("MFA_MODE", values["MFA_MODE"], MFA_MODES),
            mfa_group_id=values["MFA_GROUP_ID"].strip(),
            remove_new_auth_methods=_bool("REMOVE_NEW_AUTH_METHODS", values["REMOVE_NEW_AUTH_METHODS"]),
            soc_mailbox=values["SOC_MAILBOX"].strip(),
            notify_sender=values["NOTIFY_SENDER"].strip(),
            synced_user_policy=_choice("SYNCED_USER_POLICY", values["SYNCED_USER_POLICY"], SYNCED_POLICIES),
            revoke_while_held=_bool("REVOKE_WHILE_HELD", values["REVOKE_WHILE_HELD"]),
            onprem_reset_queue=_queue_name("ONPREM_RESET_QUEUE", values["ONPREM_RESET_QUEUE"]),
            auth_method_cutoff=_choice("AUTH_METHOD_CUTOFF", values["AUTH_METHOD_CUTOFF"], METHOD_CUTOFFS),
            auth_method_lookback_hours=_int("AUTH_METHOD_LOOKBACK_HOURS", values["AUTH_METHOD_LOOKBACK_HOURS"], 1),
            block_sign_in=_choice("BLOCK_SIGN_IN", values["BLOCK_SIGN_IN"].strip(), SIGN_IN_BLOCKS),
            remove_app_role_assignments=_bool("REMOVE_APP_ROLE_ASSIGNMENTS", values["REMOVE_APP_ROLE_ASSIGNMENTS"]),
            recovery=recovery,
            recovery_deliver_to=deliver_to,
            recovery_helpdesk_mailbox=helpdesk,
            recovery_tap_lifetime_minutes=_int("RECOVERY_TAP_LIFETIME_MINUTES", values["RECOVERY_TAP_LIFETIME_MINUTES"],
                                               *TAP_LIFETIME_RANGE),
            console_base_url=console_base_url(values["CONSOLE_BASE_URL"]),
            storm_threshold=_int("STORM_THRESHOLD", values["STORM_THRESHOLD"], 1, MAX_STORM_THRESHOLD),
            storm_window_minutes=_int("STORM_WINDOW_MINUTES", values["STORM_WINDOW_MINUTES"], 1, 24 * 60),
            storm_source_quota=_int("STORM_SOURCE_QUOTA", values["STORM_SOURCE_QUOTA"], 0, MAX_STORM_THRESHOLD),
            min_risk_level=_choice("MIN_RISK_LEVEL", values["MIN_RISK_LEVEL"], RISK_LEVELS),
            lookback_days=_int("LOOKBACK_DAYS", values["LOOKBACK_DAYS"], 1, 3650),
            hold_ttl_hours=_int("HOLD_TTL_HOURS", values["HOLD_TTL_HOURS"], 1, 24 * 30),
            key_only_intake=_bool("KEY_ONLY_INTAKE", values["KEY_ONLY_INTAKE"]),
            step_lease_s=_int("STEP_LEASE_SECONDS", values["STEP_LEASE_SECONDS"], 5),
            redrive_max=_int("REDRIVE_MAX", values["REDRIVE_MAX"], 0),
            idp_batch_s=float(_int("IDP_BATCH_SECONDS", values["IDP_BATCH_SECONDS"], 0)),
            intake_concurrency=_int("INTAKE_CONCURRENCY", values["INTAKE_CONCURRENCY"], 1, 1000),
            gate_facts_max_age_s=_int("GATE_FACTS_MAX_AGE_SECONDS", values["GATE_FACTS_MAX_AGE_SECONDS"], 0, 3600),
            risk_detection_lookback_days=_int("RISK_DETECTION_LOOKBACK_DAYS", values["RISK_DETECTION_LOOKBACK_DAYS"], 1),
            pacing=_pacing(values),
            raw=dict(values),
        )
