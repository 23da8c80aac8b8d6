"""The remediation steps, one module each, registered by name."""
from __future__ import annotations

from .base import Call, Step, StepContext, StepResult, StepRunner
from .reset_password import ResetPassword

ALL_STEPS: tuple[type[Step], ...] = (ResetPassword,)


def registry() -> dict[str, Step]:
    return {cls.name: cls() for cls in ALL_STEPS}


__all__ = ["ALL_STEPS", "Call", "Step", "StepContext", "StepResult", "StepRunner", "registry"]
