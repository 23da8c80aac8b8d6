"""Microsoft Secure Score snapshots: daily history, trend, regressions and a chart.

- ``model``   pure: Graph secureScore -> compact DayRecord; regression detection
- ``store``   tables ``securescores`` (one row per day) and ``securescorefindings``
- ``service`` snapshot (backfill / gap fill / idempotent rerun), trend, summary, latest_score
- ``chart``   pure: SVG line chart, text sparkline
- ``cli``     ``responder score``
- ``config``  SECURE_SCORE_* settings
- ``local``   local-stack helpers (start-up trigger, demo summary)
"""
