"""Boundary validation for identifiers that reach Graph URLs, OData filters or Exchange cmdlets.

Everything that comes from an alert, an HTTP body or a queue message passes through here
before it is used to build a request. Nothing in this module logs the value it rejects in
full: reasons name the field and a short, sanitised excerpt only.
"""
from __future__ import annotations

import re
import unicodedata
import uuid

__all__ = [
    "ValidationError",
    "clean_text",
    "is_guid",
    "normalize_guid",
    "normalize_upn",
    "odata_quote",
    "excerpt",
]

# A UPN is local@domain. Entra allows a limited character set in the local part
# (letters, digits and ' . - _ ! # ^ ~ and +, per Microsoft's UPN rules) and a DNS domain.
_UPN_LOCAL = r"[A-Za-z0-9!#^~.'_+\-&$%*=?{|}`/]{1,113}"
_UPN_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_UPN_RE = re.compile(rf"^{_UPN_LOCAL}@{_UPN_DOMAIN}$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_UPN = 113 + 1 + 255


class ValidationError(ValueError):
    """An input failed validation at the boundary. The message is safe to log."""


def excerpt(value: object, limit: int = 40) -> str:
    """A short printable excerpt of an untrusted value, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_guid(value: object) -> bool:
    return isinstance(value, str) and bool(_GUID_RE.fullmatch(value))


def normalize_guid(value: object, field: str = "id") -> str:
    """Return the canonical lower-case form of a GUID or raise ValidationError."""
    if not is_guid(value):
        raise ValidationError(f"{field} is not a GUID: {excerpt(value)}")
    return str(uuid.UUID(value))  # type: ignore[arg-type]


def normalize_upn(value: object, field: str = "user_principal_name") -> str:
    """Return a lower-cased UPN or raise ValidationError.

    Quotes are allowed by Entra in the local part (o'brien@contoso.com), so a UPN can never
    be pasted into an OData string literal without odata_quote().
    """
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, got {type(value).__name__}")
    candidate = value.strip()
    if not candidate or len(candidate) > _MAX_UPN or not _UPN_RE.fullmatch(candidate):
        raise ValidationError(f"{field} is not a valid user principal name: {excerpt(value)}")
    return candidate.lower()


def odata_quote(value: str) -> str:
    """Quote a value as an OData string literal: wrap in single quotes, double any quote inside.

    `x' or 1 eq 1` becomes `'x'' or 1 eq 1'`, which the service reads as one literal.
    """
    if not isinstance(value, str):
        raise ValidationError(f"OData literal must be a string, got {type(value).__name__}")
    if any(ord(ch) < 0x20 for ch in value):
        raise ValidationError(f"OData literal contains control characters: {excerpt(value)}")
    return "'" + value.replace("'", "''") + "'"


def clean_text(value: object, limit: int) -> str:
    """Text with control and format characters (C0/C1, DEL, bidi overrides) removed, whitespace
    runs collapsed to one space, cut to ``limit`` characters. For any free text that reaches a
    ledger row, a log line or the SOC mail."""
    if not isinstance(value, str):
        return ""
    kept = []
    for ch in value:
        category = unicodedata.category(ch)
        if ch in "\t\r\n" or category == "Zs":
            kept.append(" ")
        elif category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            continue
        else:
            kept.append(ch)
    return " ".join("".join(kept).split())[:limit]


def opath_quote(value: str) -> str:
    """Quote a value for an Exchange OPATH ``-Filter`` (``GrantSendOnBehalfTo -eq '<DN>'``): single
    quotes, any quote inside doubled (a distinguished name may hold one: ``CN=O'Brien,...``)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("OPATH literal must be a non-empty string")
    if any(ord(ch) < 0x20 for ch in value):
        raise ValidationError(f"OPATH literal contains control characters: {excerpt(value)}")
    return "'" + value.replace("'", "''") + "'"
