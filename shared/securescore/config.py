"""Secure Score settings, read from the environment with safe defaults.

| setting | default | meaning |
|---|---|---|
| ``SECURE_SCORE_SCHEDULE`` | ``0 30 6 * * *`` | NCRONTAB of the daily snapshot timer (UTC) |
| ``SECURE_SCORE_MIN_DROP_POINTS`` | ``5`` | a fall of more than this many points is a regression |
| ``SECURE_SCORE_NOTIFY`` | ``false`` | mail regressions to ``SOC_MAILBOX`` from ``NOTIFY_SENDER`` |

Any control whose score fell is a regression whatever the threshold. Mails need all of
``SECURE_SCORE_NOTIFY=true``, ``SOC_MAILBOX`` and ``NOTIFY_SENDER``; the first run's backfill
records historical regressions without mailing them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

from ..errors import ConfigError

DEFAULTS: dict[str, str] = {
    "SECURE_SCORE_SCHEDULE": "0 30 6 * * *",
    "SECURE_SCORE_MIN_DROP_POINTS": "5",
    "SECURE_SCORE_NOTIFY": "false",
}
MAX_DAYS = 90  # what Graph keeps


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _points(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number of points, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{key} must be a number of points >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class ScoreSettings:
    schedule: str = DEFAULTS["SECURE_SCORE_SCHEDULE"]
    min_drop_points: float = 5.0
    notify: bool = False
    soc_mailbox: str = ""
    notify_sender: str = ""

    @property
    def mail_enabled(self) -> bool:
        return self.notify and bool(self.soc_mailbox) and bool(self.notify_sender)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ScoreSettings":
        source = os.environ if env is None else env
        values = {key: source.get(key, default) for key, default in DEFAULTS.items()}
        return cls(
            schedule=values["SECURE_SCORE_SCHEDULE"].strip() or DEFAULTS["SECURE_SCORE_SCHEDULE"],
            min_drop_points=_points("SECURE_SCORE_MIN_DROP_POINTS", values["SECURE_SCORE_MIN_DROP_POINTS"]),
            notify=_bool("SECURE_SCORE_NOTIFY", values["SECURE_SCORE_NOTIFY"]),
            soc_mailbox=source.get("SOC_MAILBOX", "").strip(),
            notify_sender=source.get("NOTIFY_SENDER", "").strip(),
        )
