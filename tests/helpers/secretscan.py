"""Find leaked secrets in text without knowing them: compare hashes of every candidate window.

The simulator keeps only SHA-256 digests of the passwords it was sent and of the bearer
tokens it issued. Every window of text shaped like one of those (a 20-character run of the
password alphabet; a 43-character url-safe token) is hashed and compared.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable

from shared.passwords import CLASSES

_PASSWORD_RUN = re.compile("[" + re.escape("".join(CLASSES)) + "]{20,}")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-]{43,}")


def _windows(text: str, pattern: re.Pattern, width: int) -> Iterable[str]:
    for match in pattern.finditer(text):
        run = match.group(0)
        for start in range(len(run) - width + 1):
            yield run[start:start + width]


def find_leaks(texts: Iterable[str], password_sha256: set[str], token_sha256: set[str]) -> list[str]:
    """Return a description of each hit (never the secret itself)."""
    hits = []
    for index, text in enumerate(texts):
        for window in _windows(text, _PASSWORD_RUN, 20):
            if hashlib.sha256(window.encode()).hexdigest() in password_sha256:
                hits.append(f"password in text #{index}")
        for window in _windows(text, _TOKEN_RUN, 43):
            if hashlib.sha256(window.encode()).hexdigest() in token_sha256:
                hits.append(f"bearer token in text #{index}")
    return hits
