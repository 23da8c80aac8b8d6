"""The remediation steps, one module each, registered by name (the names in playbook.STEP_NAMES)."""
from __future__ import annotations

from ..playbook import STEP_NAMES
from .base import Call, Step, StepContext, StepResult, StepRunner
from .clean_mailbox import CleanMailbox
from .close import Close
from .enforce_mfa import EnforceMfa
from .mailbox_audit import MailboxAudit
from .recovery_pass import RecoveryPass
from .remove_delegates import RemoveDelegates
from .reset_password import ResetPassword
from .revoke_app_consent import RevokeAppConsent
from .snapshot import Snapshot
from .unblock_sender import UnblockSender

ALL_STEPS: tuple[type[Step], ...] = (Snapshot, ResetPassword, EnforceMfa, CleanMailbox, RemoveDelegates, RevokeAppConsent,
                                     UnblockSender, MailboxAudit, RecoveryPass, Close)
assert tuple(cls.name for cls in ALL_STEPS) == STEP_NAMES, "every playbook step has exactly one implementation"


def registry() -> dict[str, Step]:
    return {cls.name: cls() for cls in ALL_STEPS}


__all__ = ["ALL_STEPS", "Call", "Step", "StepContext", "StepResult", "StepRunner", "registry"]
