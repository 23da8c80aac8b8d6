"""Microsoft Secure Score snapshots: daily history, trend, regressions and a chart.

- ``model``   pure: Graph secureScore -> compact DayRecord; regression detection
- ``service`` snapshot (backfill / gap fill / idempotent rerun), trend, summary, latest_score
- ``chart``   pure: SVG line chart, text sparkline
- ``cli``     ``responder score``
- ``config``  SECURE_SCORE_* settings

Storage: shared/adapters/scores.py (tables ``securescores`` and ``securescorefindings``),
behind ports.ScoreStorePort. The local stack's start-up snapshot: localdev/securescore.py.
"""
