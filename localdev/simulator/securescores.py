"""The Secure Score history the simulator serves (``GET /security/secureScores``).

The data (control table, scores by age, the regression window, comparative averages) is in
``securescore-seed.json`` beside this file; ``generate_secure_scores`` turns it into one
score object per day, newest first, shaped like the samples ``graph-securescores-*.json``
(``controlScores[].on`` is the string ``"true"``/``"false"``, as in the live capture).
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from pathlib import Path
from typing import Any

SEED_PATH = Path(__file__).with_name("securescore-seed.json")

__all__ = ["generate_secure_scores", "load_securescore_seed", "SEED_PATH"]


@functools.lru_cache(maxsize=1)
def load_securescore_seed() -> dict[str, Any]:
    """The packaged Secure Score seed (read once)."""
    with SEED_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def _control_score(control: dict[str, Any], regression: dict[str, Any], days_ago: int,
                   regression_days_ago: int) -> float:
    name = control["controlName"]
    fallen = regression["scores"]
    if name in fallen and regression_days_ago - regression["lengthDays"] < days_ago <= regression_days_ago:
        return float(fallen[name])
    steps = control["scoreByAge"]
    score = steps[0]["score"]
    for step in steps:
        if days_ago <= step["daysAgoAtMost"]:
            score = step["score"]
    return float(score)


def generate_secure_scores(tenant_id: str, days: int, regression_days_ago: int, today: dt.date,
                           licensed: int) -> list[dict]:
    """A deterministic daily secure-score history ending today (UTC), newest first.

    Includes one regression: on ``regression_days_ago`` some controls fall (about -23 points)
    for a few days, then recover.
    """
    seed = load_securescore_seed()
    controls_cfg = seed["controls"]
    regression = seed["regression"]
    max_score = sum(c["maxScore"] for c in controls_cfg)
    out = []
    for days_ago in range(days):
        day = today - dt.timedelta(days=days_ago)
        created = f"{day.isoformat()}T00:00:00Z"
        controls = []
        total = 0.0
        for control in controls_cfg:
            cmax = control["maxScore"]
            score = _control_score(control, regression, days_ago, regression_days_ago)
            total += score
            pct = round(100.0 * score / cmax, 2) if cmax else 0.0
            controls.append({
                "controlCategory": control["controlCategory"], "controlName": control["controlName"],
                "description": control["description"],
                "implementationStatus": "Fully implemented." if score >= cmax else
                ("Not implemented." if score == 0 else "Partially implemented."),
                "lastSynced": created, "on": "true" if score > 0 else "false",
                "score": score, "scoreInPercentage": pct,
            })
        out.append({
            "id": f"{tenant_id}_{day.isoformat()}",
            "azureTenantId": tenant_id,
            "activeUserCount": max(licensed - 1, 0),
            "createdDateTime": created,
            "currentScore": round(total, 2),
            "enabledServices": list(seed["enabledServices"]),
            "licensedUserCount": licensed,
            "maxScore": max_score,
            "averageComparativeScores": copy.deepcopy(seed["averageComparativeScores"]),
            "controlScores": controls,
            "vendorInformation": {"provider": "SecureScore", "providerVersion": None, "subProvider": None,
                                  "vendor": "Microsoft"},
        })
    return out
