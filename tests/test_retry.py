"""The one retry policy (shared/retry.py) Graph, Exchange and the runner's verify-then-repeat use."""
from __future__ import annotations

import pytest

from shared.retry import (
    ADAPTER_POLICY,
    EFFECT_POLICY,
    Retrier,
    RetryKind,
    RetryPolicy,
    kind_of_status,
    parse_retry_after,
)

NO_JITTER = 0.0


def retrier(policy: RetryPolicy = ADAPTER_POLICY, jitter: float = NO_JITTER) -> Retrier:
    return Retrier(policy, rng=lambda: jitter)


def test_statuses_map_to_throttled_transient_or_not_worth_retrying():
    assert kind_of_status(429) is RetryKind.THROTTLED
    assert {kind_of_status(s) for s in (408, 500, 502, 503, 504)} == {RetryKind.TRANSIENT}
    assert {kind_of_status(s) for s in (None, 400, 401, 403, 404, 409, 412, 501)} == {None}


def test_retry_after_is_read_as_fractional_seconds_and_nonsense_is_ignored():
    assert parse_retry_after("2.128") == 2.128
    assert parse_retry_after(["3"]) == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert [parse_retry_after(v) for v in (None, [], "-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT")] == [None] * 5


def test_retry_after_is_honoured_exactly_never_sooner():
    r = retrier()
    assert r.next_delay(RetryKind.THROTTLED, 2.128) == 2.128
    assert r.next_delay(RetryKind.TRANSIENT, 1.5) == 1.5


def test_without_retry_after_the_wait_doubles_from_a_base_per_kind_and_is_capped():
    r = retrier()
    assert [r.next_delay(RetryKind.THROTTLED) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    r = retrier()
    assert [r.next_delay(RetryKind.TRANSIENT) for _ in range(2)] == [0.25, 0.5]


def test_throttled_and_transient_retries_are_counted_separately_up_to_their_limits():
    r = retrier()
    assert all(r.next_delay(RetryKind.THROTTLED, 0.01) is not None for _ in range(6))
    assert r.next_delay(RetryKind.THROTTLED, 0.01) is None  # the 7th 429
    assert r.next_delay(RetryKind.TRANSIENT, 0.01) is not None
    assert r.next_delay(RetryKind.TRANSIENT, 0.01) is not None
    assert r.next_delay(RetryKind.TRANSIENT, 0.01) is None  # the 3rd 5xx


def test_a_transient_failure_is_retried_only_when_the_request_is_safe_to_repeat():
    r = retrier()
    assert r.next_delay(RetryKind.TRANSIENT, safe=False) is None  # a write that may have landed
    assert r.next_delay(RetryKind.THROTTLED, safe=False) == 0.5  # a 429 was never processed
    assert r.next_delay(RetryKind.TRANSIENT, safe=True) == 0.25  # transport errors too: with a delay


def test_a_retry_after_beyond_the_budget_gives_up_instead_of_cutting_the_wait():
    r = retrier()
    assert r.next_delay(RetryKind.THROTTLED, 59.0) == 59.0
    assert r.next_delay(RetryKind.THROTTLED, 1.5) is None  # 60.5 s in total would pass the 60 s budget
    effect = retrier(EFFECT_POLICY)
    assert effect.next_delay(RetryKind.THROTTLED, 30.0) is None  # the runner leaves it to the platform


def test_jitter_only_adds_a_little():
    r = retrier(jitter=1.0)  # the most the random draw can give
    assert r.next_delay(RetryKind.THROTTLED, 2.0) == pytest.approx(2.1)  # at most 0.1 s
    assert retrier(jitter=1.0).next_delay(RetryKind.TRANSIENT, 0.0) == pytest.approx(0.01)
    assert r.waited == pytest.approx(2.1)


def test_the_runner_repeats_a_verified_effect_twice_within_five_seconds():
    r = retrier(EFFECT_POLICY)
    assert [r.next_delay(RetryKind.TRANSIENT) for _ in range(3)] == [0.25, 0.5, None]
    assert EFFECT_POLICY.budget_s == 5.0
