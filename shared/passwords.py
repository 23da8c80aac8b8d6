"""Strong temporary passwords from the ``secrets`` module.

20 characters drawn from all four classes (lower, upper, digit, symbol), at least two of
each, shuffled with a CSPRNG. Well inside Entra's 8-256 characters and 3-of-4 rule.
The value lives only in memory for the PATCH; it is never logged, stored or sent anywhere.
"""
from __future__ import annotations

import secrets
import string

LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
DIGITS = string.digits
SYMBOLS = "!#$%&*+-=?@^_~.:"
CLASSES = (LOWER, UPPER, DIGITS, SYMBOLS)


def generate_password(length: int = 20) -> str:
    if length < 16:
        raise ValueError("temporary passwords are at least 16 characters")
    chars = [secrets.choice(cls) for cls in CLASSES for _ in range(2)]
    alphabet = "".join(CLASSES)
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)
