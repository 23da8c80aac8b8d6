"""Settings and playbook order: validated at start-up with errors that name the key."""
import json
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.playbook import DEFAULT_PLAYBOOK, STEP_NAMES, next_step, queue_name, validate_order
from shared.settings import DEFAULTS, Settings

SAMPLE = json.loads((Path(__file__).parent.parent / "local.settings.sample.json").read_text())["Values"]


def test_every_setting_the_code_reads_is_in_the_sample_with_the_same_default():
    for key, default in DEFAULTS.items():
        assert key in SAMPLE, key
        assert SAMPLE[key] == default, key


def test_defaults_are_safe():
    settings = Settings.from_env({})
    assert settings.mode == "approval"
    assert settings.playbook_steps == DEFAULT_PLAYBOOK == tuple(s for s in STEP_NAMES if s != "recovery-pass")
    assert settings.recovery == "none" and settings.console_base_url == ""
    assert settings.graph_base_url == "https://graph.microsoft.com"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9000/", "https://127.0.0.5"])
def test_loopback_overrides_are_accepted(url):
    assert Settings.from_env({"GRAPH_BASE_URL": url, "EXO_BASE_URL": url}).graph_base_url == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://10.0.0.1", "https://graph.evil.example", "http://192.168.1.10:8080",
                                 "https://graph.microsoft.com.evil.example", "ftp://127.0.0.1", "http://0.0.0.0"])
def test_non_loopback_overrides_are_refused_at_start_up(url):
    with pytest.raises(ConfigError, match="override refused"):
        Settings.from_env({"GRAPH_BASE_URL": url})
    with pytest.raises(ConfigError, match="EXO_BASE_URL"):
        Settings.from_env({"EXO_BASE_URL": url})


@pytest.mark.parametrize("env, message", [
    ({"RESPONDER_MODE": "yolo"}, "RESPONDER_MODE"),
    ({"MFA_MODE": "sms"}, "MFA_MODE"),
    ({"STORM_THRESHOLD": "ten"}, "STORM_THRESHOLD"),
    ({"STORM_THRESHOLD": "0"}, "at least 1"),
    ({"REMOVE_NEW_AUTH_METHODS": "maybe"}, "REMOVE_NEW_AUTH_METHODS"),
    ({"PLAYBOOK_STEPS": "snapshot,nuke"}, "unknown step"),
])
def test_bad_values_name_the_key(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("order, message", [
    ("reset-password,snapshot", "snapshot must come before reset-password"),
    ("snapshot,reset-password,unblock-sender,enforce-mfa", "enforce-mfa must come before unblock-sender"),
    ("snapshot,unblock-sender", "must include reset-password"),
    ("reset-password,unblock-sender", "needs enforce-mfa"),
    ("reset-password,close,enforce-mfa", "close must be the last step"),
    ("reset-password,reset-password", "twice"),
    ("", "empty"),
])
def test_playbook_order_is_validated(order, message):
    with pytest.raises(ConfigError, match=message):
        validate_order(tuple(s for s in order.split(",") if s))


def test_a_shorter_valid_playbook_and_its_queues():
    order = validate_order(("reset-password", "enforce-mfa", "close"))
    assert next_step(order, "reset-password") == "enforce-mfa" and next_step(order, "close") is None
    assert [queue_name(s) for s in order] == ["step-reset-password", "step-enforce-mfa", "step-close"]


def test_recovery_tap_puts_the_recovery_pass_before_close_and_needs_a_recipient():
    tap = Settings.from_env({"RECOVERY": "tap", "RECOVERY_HELPDESK_MAILBOX": "helpdesk@contoso.com"})
    assert tap.playbook_steps[-2:] == ("recovery-pass", "close")
    assert Settings.from_env({"RECOVERY": "tap", "RECOVERY_DELIVER_TO": "manager",
                              "PLAYBOOK_STEPS": "snapshot,reset-password,enforce-mfa"}).playbook_steps[-1] == "recovery-pass"
    with pytest.raises(ConfigError, match="RECOVERY_HELPDESK_MAILBOX"):
        Settings.from_env({"RECOVERY": "tap"})
    with pytest.raises(ConfigError, match="recovery-pass must come before close|enforce-mfa must come before recovery-pass"):
        Settings.from_env({"RECOVERY": "tap", "RECOVERY_HELPDESK_MAILBOX": "h@contoso.com",
                           "PLAYBOOK_STEPS": "snapshot,reset-password,recovery-pass,enforce-mfa"})
    for bad in ({"RECOVERY": "sms"}, {"RECOVERY_TAP_LIFETIME_MINUTES": "5"}, {"RECOVERY_TAP_LIFETIME_MINUTES": "50000"},
                {"RECOVERY_HELPDESK_MAILBOX": "not a mailbox"}, {"RECOVERY_DELIVER_TO": "user"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env(bad)


@pytest.mark.parametrize("url", ["http://console.contoso.com", "https://x.example/?a=1", "https://x.example/#f",
                                 "https://user:pw@x.example", "javascript:alert(1)", "https://"])
def test_console_base_url_must_be_a_plain_https_url(url):
    with pytest.raises(ConfigError, match="CONSOLE_BASE_URL"):
        Settings.from_env({"CONSOLE_BASE_URL": url})


def test_console_base_url_accepts_https_and_loopback_http():
    assert Settings.from_env({"CONSOLE_BASE_URL": "https://responder.contoso.com/"}).console_base_url == \
        "https://responder.contoso.com"
    assert Settings.from_env({"CONSOLE_BASE_URL": "http://127.0.0.1:7071"}).console_base_url == "http://127.0.0.1:7071"
