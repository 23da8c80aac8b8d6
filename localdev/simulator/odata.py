"""OData helpers for the simulator: timestamps, Graph error bodies, $filter, $select and paging.

Everything here is pure and cheap: it runs on every simulated request.
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import logging
import re
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode

logger = logging.getLogger(__name__)

GRAPH_ROOT = "https://graph.microsoft.com"
GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
UPN_RE = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")


# --------------------------------------------------------------------------- time

def utcnow() -> dt.datetime:
    """Current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def iso(value: dt.datetime | None) -> str | None:
    """Format like Graph does (UTC, 'Z'), with microseconds."""
    if value is None:
        return None
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def exo_time(value: dt.datetime | None) -> str | None:
    """Format like the Exchange admin API does ('2025-11-11T09:47:38.0000000+00:00')."""
    if value is None:
        return None
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + "%07d" % (value.microsecond * 10) + "+00:00"


_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_iso(text: Any) -> dt.datetime | None:
    """Parse an ISO-8601 timestamp (any number of fractional digits, 'Z' or offset). None if not one."""
    if not isinstance(text, str):
        return None
    m = _ISO_RE.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tzinfo = dt.timezone.utc
    if tz and tz.upper() != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        tzinfo = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                           micro, tzinfo=tzinfo)
    except ValueError:
        return None


_REL_RE = re.compile(r"^@now((?:[+-]\d+(?:\.\d+)?[smhd])*)$")
_REL_PART = re.compile(r"([+-])(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def resolve_relative_times(value: Any, now: dt.datetime) -> Any:
    """Replace '@now', '@now-3h', '@now+10m-5s' strings (recursively) by ISO timestamps relative to `now`."""
    if isinstance(value, str):
        m = _REL_RE.match(value)
        if not m:
            return value
        seconds = 0.0
        for sign, amount, unit in _REL_PART.findall(m.group(1)):
            seconds += (1 if sign == "+" else -1) * float(amount) * _UNITS[unit]
        return iso(now + dt.timedelta(seconds=seconds))
    if isinstance(value, list):
        return [resolve_relative_times(v, now) for v in value]
    if isinstance(value, dict):
        return {k: resolve_relative_times(v, now) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- errors

def inner_error(request_id: str, client_request_id: str | None) -> dict:
    """Graph's innerError block."""
    return {
        "date": utcnow().strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id or request_id,
    }


class GraphError(Exception):
    """An error answered in Graph's shape: {"error": {"code", "message", "innerError"}}."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                 permission: str | None = None, inner_message: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.permission = permission
        self.inner_message = inner_message  # some services repeat the message inside innerError

    def body(self, request_id: str, client_request_id: str | None) -> dict:
        """The JSON body for this error."""
        inner = inner_error(request_id, client_request_id)
        if self.inner_message:
            inner = {"message": self.message, **inner}
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


def throttle_body(request_id: str) -> dict:
    """Graph's 429 body, as in samples/graph-error-429.json."""
    return {"error": {"code": "TooManyRequests",
                      "innerError": {"code": "429", "date": utcnow().strftime("%Y-%m-%dT%H:%M:%S"),
                                     "message": "Please retry after", "request-id": request_id, "status": "429"},
                      "message": "Please retry again later."}}


def not_found_user(key: str) -> GraphError:
    """404 for a directory object, as in samples/graph-error-404-user.json."""
    return GraphError(404, "Request_ResourceNotFound",
                      f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.")


def bad_request(message: str, code: str = "Request_BadRequest") -> GraphError:
    """400 Bad Request."""
    return GraphError(400, code, message)


# --------------------------------------------------------------------------- $select

def parse_select(query: Mapping[str, str], known: Mapping[str, str], type_name: str) -> list[str] | None:
    """Parse $select against `known` (lower-case name -> canonical name). None when absent."""
    raw = query.get("$select")
    if raw is None:
        return None
    names: list[str] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        canon = known.get(part.lower())
        if canon is None:
            raise bad_request(
                f"Parsing OData Select and Expand failed: Could not find a property named '{part}' on type "
                f"'microsoft.graph.{type_name}'.")
        if canon not in names:
            names.append(canon)
    if not names:
        raise bad_request("Invalid $select clause.")
    return names


# --------------------------------------------------------------------------- $filter

_TOKEN_RE = re.compile(r"\s*(?:(\()|(\))|('(?:[^']|'')*')|([^\s()']+))")
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request(f"Invalid filter clause: unexpected text at position {pos}.", "BadRequest")
        tokens.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def _literal(token: str) -> Any:
    if token.startswith("'"):
        return token[1:-1].replace("''", "'")
    low = token.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low == "null":
        return None
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if re.fullmatch(r"-?\d+\.\d+", token):
        return float(token)
    if parse_iso(token) is not None or GUID_RE.match(token):
        return token
    raise bad_request(f"Invalid filter clause: '{token}' is not a valid literal.", "BadRequest")


def _get_path(item: Mapping[str, Any], path: str) -> Any:
    cur: Any = item
    for part in path.split("/"):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


_CMP = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _make_comparison(path: str, op: str, value: Any) -> Callable[[Mapping[str, Any]], bool]:
    """Predicate for `path op value`; the literal is analysed once (datetime / string / other)."""
    fn = _CMP[op]
    parts = path.split("/")
    single = parts[0] if len(parts) == 1 else None
    literal_dt = parse_iso(value) if isinstance(value, str) and ("T" in value or len(value) == 10) else None
    literal_str = value.lower() if isinstance(value, str) else None

    def get(item: Mapping[str, Any]) -> Any:
        return item.get(single) if single is not None else _get_path(item, path)

    def pred(item: Mapping[str, Any]) -> bool:
        left = get(item)
        if literal_dt is not None and isinstance(left, str):
            left_dt = parse_iso(left)
            if left_dt is not None:
                return fn(left_dt, literal_dt)
        if literal_str is not None and isinstance(left, str):
            return fn(left.lower(), literal_str)
        if op in ("eq", "ne"):
            return fn(left, value)
        if left is None or value is None:
            return False
        try:
            return fn(left, value)
        except TypeError:
            return False
    return pred


def compile_filter(text: str | None, allowed: Iterable[str] | None = None) -> Callable[[Mapping[str, Any]], bool]:
    """Compile a small OData $filter subset: comparisons (eq ne gt ge lt le), and/or/not, parentheses.

    `allowed` restricts the property paths (case-insensitive); property names are matched case-insensitively.
    Compiled filters are cached (pollers repeat the same few filters).
    """
    if text is None or not text.strip():
        return _match_all
    return _compile_cached(text, tuple(allowed) if allowed is not None else None)


def _match_all(item: Mapping[str, Any]) -> bool:
    return True


@functools.lru_cache(maxsize=512)
def _compile_cached(text: str, allowed: tuple[str, ...] | None) -> Callable[[Mapping[str, Any]], bool]:
    tokens = _tokenize(text)
    # "coll/any:prop" entries allow the lambda `coll/any(x: x/prop op 'v')` over a collection.
    lambdas: dict[str, dict[str, str]] = {}
    plain: dict[str, str] | None = None
    if allowed is not None:
        plain = {}
        for entry in allowed:
            if "/any:" in entry:
                coll, _, inner = entry.partition("/any:")
                lambdas.setdefault(coll.lower(), {"": coll})[inner.lower()] = inner
            else:
                plain[entry.lower()] = entry
    pos = 0
    scope: list[tuple[str, dict[str, str] | None]] = []  # (lambda variable, allowed inner props)

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise bad_request("Invalid filter clause: unexpected end of expression.", "BadRequest")
        tok = tokens[pos]
        pos += 1
        return tok

    def parse_or() -> Callable:
        parts = [parse_and()]
        while (peek() or "").lower() == "or":
            take()
            parts.append(parse_and())
        if len(parts) == 1:
            return parts[0]
        return lambda item: any(p(item) for p in parts)

    def parse_and() -> Callable:
        parts = [parse_unary()]
        while (peek() or "").lower() == "and":
            take()
            parts.append(parse_unary())
        if len(parts) == 1:
            return parts[0]
        return lambda item: all(p(item) for p in parts)

    def parse_unary() -> Callable:
        tok = peek()
        if tok is not None and tok.lower() == "not":
            take()
            inner = parse_unary()
            return lambda item: not inner(item)
        if tok == "(":
            take()
            inner = parse_or()
            if take() != ")":
                raise bad_request("Invalid filter clause: missing ')'.", "BadRequest")
            return inner
        return parse_cmp()

    def unsupported(prop: str) -> GraphError:
        return bad_request(f"Invalid filter clause: property '{prop}' is not supported in $filter.", "BadRequest")

    def parse_lambda(prop: str) -> Callable:
        nonlocal pos
        coll = prop[: -len("/any")]
        allowed_inner = None
        if plain is not None:
            spec = lambdas.get(coll.lower())
            if spec is None:
                raise unsupported(prop)
            coll, allowed_inner = spec[""], {k: v for k, v in spec.items() if k}
        if take() != "(":
            raise bad_request("Invalid filter clause: expected '(' after any.", "BadRequest")
        var_tok = take()
        var, colon, rest = var_tok.partition(":")
        if not colon or not var:
            raise bad_request(f"Invalid filter clause: expected a lambda variable, got {var_tok!r}.", "BadRequest")
        if rest:
            tokens.insert(pos, rest)
        scope.append((var, allowed_inner))
        inner = parse_or()
        scope.pop()
        if take() != ")":
            raise bad_request("Invalid filter clause: missing ')'.", "BadRequest")

        def pred(item: Mapping[str, Any]) -> bool:
            values = _get_path(item, coll)
            return isinstance(values, list) and any(inner(v) for v in values if isinstance(v, Mapping))
        return pred

    def parse_cmp() -> Callable:
        prop = take()
        if prop in ("(", ")") or prop.startswith("'"):
            raise bad_request(f"Invalid filter clause: expected a property name, got {prop!r}.", "BadRequest")
        if prop.lower().endswith("/any") and peek() == "(":
            return parse_lambda(prop)
        if scope:
            var, allowed_inner = scope[-1]
            if not prop.startswith(var + "/"):
                raise bad_request(f"Invalid filter clause: '{prop}' must start with the lambda variable '{var}'.",
                                  "BadRequest")
            prop = prop[len(var) + 1:]
            if allowed_inner is not None:
                canon = allowed_inner.get(prop.lower())
                if canon is None:
                    raise unsupported(f"{var}/{prop}")
                prop = canon
        elif plain is not None:
            canon = plain.get(prop.lower())
            if canon is None:
                raise unsupported(prop)
            prop = canon
        op = take().lower()
        if op not in _OPS:
            raise bad_request(f"Invalid filter clause: unsupported operator '{op}'.", "BadRequest")
        return _make_comparison(prop, op, _literal(take()))

    result = parse_or()
    if pos != len(tokens):
        raise bad_request(f"Invalid filter clause: unexpected token '{tokens[pos]}'.", "BadRequest")
    return result


# --------------------------------------------------------------------------- paging

def _encode_skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sim:{offset}".encode()).decode().rstrip("=")


def _decode_skiptoken(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("sim:"):
            raise ValueError(raw)
        return max(0, int(raw[4:]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("Invalid $skiptoken.", "BadRequest") from exc


def parse_top(query: Mapping[str, str], default: int | None, maximum: int) -> int | None:
    """$top as an int (400 on nonsense); `default` when absent."""
    raw = query.get("$top")
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError as exc:
        raise bad_request(f"Invalid value '{raw}' for $top.", "BadRequest") from exc
    if top < 1:
        raise bad_request(f"Invalid value '{raw}' for $top.", "BadRequest")
    return min(top, maximum)


def paginate(items: Sequence[Any], query: Mapping[str, str], base_url: str, path: str,
             default_top: int | None, max_top: int) -> tuple[Sequence[Any], str | None]:
    """Slice `items` by $skip/$skiptoken and $top; build an absolute @odata.nextLink on the simulator."""
    top = parse_top(query, default_top, max_top)
    offset = 0
    if "$skiptoken" in query:
        offset = _decode_skiptoken(query["$skiptoken"])
    elif "$skip" in query:
        try:
            offset = max(0, int(query["$skip"]))
        except ValueError as exc:
            raise bad_request(f"Invalid value '{query['$skip']}' for $skip.", "BadRequest") from exc
    if top is None:
        return items[offset:], None
    page = items[offset:offset + top]
    next_link = None
    if offset + top < len(items):
        params = [(k, v) for k, v in query.items() if k not in ("$skiptoken", "$skip", "$top")]
        params.append(("$top", str(top)))
        params.append(("$skiptoken", _encode_skiptoken(offset + top)))
        next_link = f"{base_url}{path}?" + urlencode(params, quote_via=quote, safe="$',:()")
    return page, next_link
