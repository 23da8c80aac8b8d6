"""A small fault storm in the suite: 30 compromised users, 20% of every Graph, Exchange and
token request failing (429 + Retry-After, 5xx, hangs), the worker killed and restarted
mid-step. Every incident must end terminal, nothing lost, no side effect applied twice.
Figures come from Table storage, the poison queues and the simulator's mutation log."""
from bench.chaos import count_duplicates, run


def test_fault_storm_with_worker_kills_loses_nothing_and_repeats_nothing():
    result = run(incidents=30, fault_rate=0.2, kill_workers=True, timeout_s=400, seed=11, progress=lambda line: None)
    assert result["kills"] >= 1
    assert result["terminal"] == 30 and result["succeeded"] == 30
    assert result["lost"] == 0 and result["poison_messages"] == 0
    assert result["duplicate_password_resets"] == 0 and result["duplicate_side_effects"] == 0, result


def test_duplicate_counting_sees_a_repeated_change_and_ignores_no_ops():
    user = "u1"
    mutations = [
        {"action": "password_reset", "user": user},
        {"action": "password_reset", "user": user},
        {"action": "inbox_rule_updated", "user": user, "details": {"rule": "r1", "after": {"isEnabled": False}}},
        {"action": "inbox_rule_updated", "user": user, "details": {"rule": "r2", "after": {"isEnabled": False}}},
        {"action": "sender_unblocked", "user": user, "details": {"was_blocked": True}},
        {"action": "sender_unblocked", "user": user, "details": {"was_blocked": False}},
        {"action": "mail_sent", "user": user, "details": {"subject": "s"}},
        {"action": "mail_sent", "user": user, "details": {"subject": "s"}},
        {"action": "password_reset", "user": "someone-else"},
    ]
    assert count_duplicates(mutations, {user}) == (1, 1, {"mail_sent": 1})
