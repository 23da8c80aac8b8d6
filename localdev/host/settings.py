"""Configuration for the local Functions host: app settings, host.json and .NET timespans.

* ``local.settings.json`` (or ``local.settings.sample.json``, or an explicit file): its
  ``Values`` become environment variables, but a variable already present in the
  environment always wins, so a launcher can inject e.g. Azurite's connection string.
  ``Host.LocalHttpPort`` is the default HTTP port.
* ``host.json``: the subset of the real host's schema that this host honours is parsed into
  :class:`HostConfig` (``extensions.queues``, ``extensions.http.routePrefix``,
  ``functionTimeout``); anything it does not honour is reported in ``HostConfig.ignored``.
* Timespans use the .NET ``TimeSpan`` text form the real host reads: ``[-][d.]hh:mm[:ss[.f]]``
  (``"00:01:00"``, ``"00:00:00.250"``, ``"1.00:00:00"``) or a bare integer meaning days.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional

logger = logging.getLogger(__name__)

__all__ = [
    "SettingsError",
    "QueueOptions",
    "HostConfig",
    "parse_timespan",
    "find_settings_file",
    "load_local_settings",
    "apply_settings",
    "load_host_config",
    "resolve_setting_refs",
]

_TIMESPAN = re.compile(
    r"^\s*(?P<sign>-)?"
    r"(?:(?P<days>\d+)\.)?"
    r"(?P<hours>\d{1,2}):(?P<minutes>\d{1,2})"
    r"(?::(?P<seconds>\d{1,2})(?:\.(?P<fraction>\d{1,7}))?)?\s*$"
)
_DAYS_ONLY = re.compile(r"^\s*(?P<sign>-)?(?P<days>\d+)\s*$")
_SETTING_REF = re.compile(r"%([^%\s]+)%")

DEFAULT_BATCH_SIZE = 16
MAX_BATCH_SIZE = 32  # the storage service returns at most 32 messages per request
DEFAULT_MAX_POLLING_INTERVAL = 60.0
MIN_POLLING_INTERVAL = 0.1
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_ROUTE_PREFIX = "api"


class SettingsError(ValueError):
    """A settings file or host.json value is invalid."""


def parse_timespan(text: Any) -> float:
    """Parse a .NET TimeSpan string into seconds (float).

    Accepts ``[-][d.]hh:mm[:ss[.fffffff]]`` and a bare integer (days, as ``TimeSpan.Parse``
    does). Raises :class:`SettingsError` on anything else, including non-strings.
    """
    if not isinstance(text, str):
        raise SettingsError(f"timespan must be a string like '00:01:00', got {text!r}")
    match = _TIMESPAN.match(text)
    if match:
        hours, minutes = int(match["hours"]), int(match["minutes"])
        seconds = int(match["seconds"] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise SettingsError(f"timespan {text!r} has an out-of-range component")
        fraction = float("0." + match["fraction"]) if match["fraction"] else 0.0
        total = int(match["days"] or 0) * 86400 + hours * 3600 + minutes * 60 + seconds + fraction
        return -total if match["sign"] else total
    match = _DAYS_ONLY.match(text)
    if match:
        total = float(int(match["days"]) * 86400)
        return -total if match["sign"] else total
    raise SettingsError(f"invalid timespan {text!r}; expected [d.]hh:mm:ss[.fff]")


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json, with the real host's defaults (times in seconds)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int = DEFAULT_BATCH_SIZE // 2
    max_polling_interval: float = DEFAULT_MAX_POLLING_INTERVAL
    visibility_timeout: float = 0.0
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    message_encoding: str = "base64"

    @property
    def max_concurrency(self) -> int:
        """Upper bound of concurrently running invocations per queue function."""
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json this host honours."""

    queues: QueueOptions = field(default_factory=QueueOptions)
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    function_timeout: Optional[float] = None  # seconds; None = unlimited
    ignored: tuple = ()  # dotted host.json keys present but not honoured
    path: Optional[str] = None


def _int_setting(section: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"host.json extensions.queues.{key} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SettingsError(f"host.json extensions.queues.{key} must be in [{lo}, {hi}], got {value}")
    return value


def _parse_queue_options(section: Mapping[str, Any], ignored: list) -> QueueOptions:
    known = {
        "batchSize", "newBatchThreshold", "maxPollingInterval", "visibilityTimeout",
        "maxDequeueCount", "messageEncoding",
    }
    for key in section:
        if key not in known:
            ignored.append(f"extensions.queues.{key}")
    batch_size = _int_setting(section, "batchSize", DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE)
    threshold = _int_setting(section, "newBatchThreshold", batch_size // 2, 0, 10_000)
    max_poll = DEFAULT_MAX_POLLING_INTERVAL
    if "maxPollingInterval" in section:
        max_poll = parse_timespan(section["maxPollingInterval"])
        if max_poll < MIN_POLLING_INTERVAL:
            raise SettingsError("host.json extensions.queues.maxPollingInterval must be >= 00:00:00.1")
    visibility = 0.0
    if "visibilityTimeout" in section:
        visibility = parse_timespan(section["visibilityTimeout"])
        if visibility < 0:
            raise SettingsError("host.json extensions.queues.visibilityTimeout must not be negative")
    max_dequeue = _int_setting(section, "maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT, 1, 10_000)
    encoding = str(section.get("messageEncoding", "base64")).strip().lower()
    if encoding not in ("base64", "none"):
        raise SettingsError(
            f"host.json extensions.queues.messageEncoding must be 'base64' or 'none', got {encoding!r}"
        )
    return QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=threshold,
        max_polling_interval=max_poll,
        visibility_timeout=visibility,
        max_dequeue_count=max_dequeue,
        message_encoding=encoding,
    )


def parse_host_config(data: Mapping[str, Any], path: Optional[str] = None) -> HostConfig:
    """Build a :class:`HostConfig` from an already-parsed host.json document."""
    if not isinstance(data, Mapping):
        raise SettingsError("host.json must contain a JSON object")
    ignored: list = []
    extensions = data.get("extensions") or {}
    if not isinstance(extensions, Mapping):
        raise SettingsError("host.json 'extensions' must be an object")
    queues_section = extensions.get("queues") or {}
    if not isinstance(queues_section, Mapping):
        raise SettingsError("host.json extensions.queues must be an object")
    queues = _parse_queue_options(queues_section, ignored)

    http_section = extensions.get("http") or {}
    if not isinstance(http_section, Mapping):
        raise SettingsError("host.json extensions.http must be an object")
    for key in http_section:
        if key != "routePrefix":
            ignored.append(f"extensions.http.{key}")
    route_prefix = http_section.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(route_prefix, str):
        raise SettingsError("host.json extensions.http.routePrefix must be a string")
    route_prefix = route_prefix.strip("/")

    for key in extensions:
        if key not in ("queues", "http"):
            ignored.append(f"extensions.{key}")

    timeout: Optional[float] = None
    if "functionTimeout" in data and data["functionTimeout"] is not None:
        timeout = parse_timespan(data["functionTimeout"])
        if timeout < 0:  # "-1" means unbounded in the real host
            timeout = None
        elif timeout == 0:
            raise SettingsError("host.json functionTimeout must be positive (or -1 for unlimited)")

    for key in data:
        if key not in ("version", "extensions", "functionTimeout", "logging", "extensionBundle"):
            ignored.append(key)
    return HostConfig(
        queues=queues,
        route_prefix=route_prefix,
        function_timeout=timeout,
        ignored=tuple(ignored),
        path=path,
    )


def load_host_config(app_dir: os.PathLike | str) -> HostConfig:
    """Read ``host.json`` from the app directory (defaults when the file is absent)."""
    path = Path(app_dir) / "host.json"
    if not path.is_file():
        logger.warning("No host.json in %s; using the real host's defaults", app_dir)
        return HostConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from exc
    return parse_host_config(data, path=str(path))


def find_settings_file(app_dir: os.PathLike | str, explicit: Optional[str] = None) -> Optional[Path]:
    """The settings file to use: ``explicit``, else local.settings.json, else the sample."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"settings file {explicit} does not exist")
        return path
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = Path(app_dir) / name
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class LocalSettings:
    """The parsed settings file."""

    values: dict
    local_http_port: Optional[int] = None
    path: Optional[str] = None


def load_local_settings(path: Optional[os.PathLike | str]) -> LocalSettings:
    """Parse a local.settings(.sample).json file; ``None`` gives empty settings."""
    if path is None:
        return LocalSettings(values={})
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path} must contain a JSON object")
    if data.get("IsEncrypted"):
        raise SettingsError(f"{path} is encrypted (IsEncrypted=true); the local host needs plain values")
    raw_values = data.get("Values") or {}
    if not isinstance(raw_values, Mapping):
        raise SettingsError(f"{path}: 'Values' must be an object")
    values = {}
    for key, value in raw_values.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            raise SettingsError(f"{path}: Values.{key} must be a string")
        if isinstance(value, bool):
            value = "true" if value else "false"
        values[str(key)] = str(value)
    port = None
    host_section = data.get("Host") or {}
    if isinstance(host_section, Mapping) and host_section.get("LocalHttpPort") not in (None, ""):
        try:
            port = int(host_section["LocalHttpPort"])
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{path}: Host.LocalHttpPort must be an integer") from exc
    return LocalSettings(values=values, local_http_port=port, path=str(path))


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> list:
    """Copy settings into the environment without overriding existing variables.

    Returns the names that were actually set (never the values: they may be secrets).
    """
    environ = os.environ if environ is None else environ
    applied = []
    for key, value in values.items():
        if key not in environ:
            environ[key] = value
            applied.append(key)
    return applied


def resolve_setting_refs(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every ``%NAME%`` in ``text`` with the app setting (environment variable) NAME.

    Raises :class:`SettingsError` naming the missing setting when one is not defined.
    """
    environ = os.environ if environ is None else environ

    def _sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in environ:
            raise SettingsError(f"'%{name}%' does not resolve to a value: app setting {name} is not set")
        return environ[name]

    return _SETTING_REF.sub(_sub, text)
