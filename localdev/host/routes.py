"""HTTP route templates of the Functions host (ASP.NET-style) compiled to regular expressions.

Supported: literal segments (case-insensitive), ``{name}``, constrained ``{name:int}``
(``int``, ``long``, ``alpha``, ``bool``, ``guid``, ``decimal``, ``double``, ``float``,
``datetime``, ``minlength(n)``, ``maxlength(n)``, ``length(n)``, ``length(a,b)``, ``min(n)``,
``max(n)``, ``range(a,b)``, ``regex(...)``; several may be chained), optional ``{name?}``,
defaults ``{name=value}`` and a trailing catch-all ``{*name}``. Route values are strings,
as the real host passes them. More specific templates win (literal > constrained > plain >
optional > catch-all, segment by segment).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

__all__ = ["RouteTemplate", "RouteError", "compile_route", "sort_routes"]

_SIMPLE_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "guid": r"(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{32})",
    "decimal": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    "float": r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    "datetime": r"[^/]+",
}
_PARAM = re.compile(r"\{([^{}]*)\}")
_CALL = re.compile(r"^(\w+)\((.*)\)$", re.S)

# segment ranks for precedence
_LITERAL, _CONSTRAINED, _PLAIN, _OPTIONAL, _CATCHALL = range(5)


class RouteError(ValueError):
    """The route template cannot be compiled."""


def _split_constraints(spec: str) -> list:
    """Split ``int:min(1):regex(a:b)`` on ':' outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p]


def _constraint(name: str, text: str) -> tuple:
    """-> (regex or None, check callable or None)."""
    lowered = text.strip().lower()
    if lowered in _SIMPLE_CONSTRAINTS:
        return _SIMPLE_CONSTRAINTS[lowered], None
    call = _CALL.match(text.strip())
    if not call:
        logger.warning("Route parameter '%s': unknown constraint '%s' ignored", name, text)
        return None, None
    fn, args_text = call.group(1).lower(), call.group(2)
    if fn == "regex":
        pattern = args_text.lstrip("^").rstrip("$")
        return f"(?:{pattern})", None
    try:
        args = [int(a.strip()) for a in args_text.split(",")]
    except ValueError as exc:
        raise RouteError(f"constraint {text!r} needs integer arguments") from exc
    checks: dict[str, Callable[[str], bool]] = {
        "minlength": lambda v: len(v) >= args[0],
        "maxlength": lambda v: len(v) <= args[0],
        "length": (lambda v: len(v) == args[0]) if len(args) == 1 else (lambda v: args[0] <= len(v) <= args[1]),
        "min": lambda v: int(v) >= args[0],
        "max": lambda v: int(v) <= args[0],
        "range": lambda v: args[0] <= int(v) <= args[1],
    }
    if fn not in checks:
        logger.warning("Route parameter '%s': unknown constraint '%s' ignored", name, text)
        return None, None
    regex = r"-?\d+" if fn in ("min", "max", "range") else None
    return regex, checks[fn]


@dataclass
class RouteTemplate:
    """A compiled route template."""

    template: str
    regex: Any
    groups: dict  # regex group name -> route parameter name
    checks: list = field(default_factory=list)  # (param name, callable)
    defaults: dict = field(default_factory=dict)
    ranks: tuple = ()

    def match(self, path: str) -> Optional[dict]:
        """Route params for ``path`` (no leading/trailing '/' needed), or None."""
        path = path.strip("/")
        m = self.regex.fullmatch(path)
        if not m:
            return None
        values = dict(self.defaults)
        for group, name in self.groups.items():
            value = m.group(group)
            if value is not None and value != "":
                values[name] = value
        for name, check in self.checks:
            if name in values:
                try:
                    if not check(values[name]):
                        return None
                except ValueError:
                    return None
        return values


def compile_route(template: str) -> RouteTemplate:
    """Compile a template like ``api/incidents/{id:int}`` (without host or query)."""
    segments = [s for s in template.strip().strip("/").split("/")]
    if segments == [""]:
        segments = []
    pattern_parts: list = []
    groups: dict = {}
    checks: list = []
    defaults: dict = {}
    ranks: list = []
    for index, segment in enumerate(segments):
        if not segment:
            raise RouteError(f"route {template!r} has an empty segment")
        params = list(_PARAM.finditer(segment))
        if not params:
            pattern_parts.append(("/", re.escape(segment), False))
            ranks.append(_LITERAL)
            continue
        whole = len(params) == 1 and params[0].group(0) == segment
        seg_regex, seg_rank, optional = "", _LITERAL, False
        pos = 0
        for param in params:
            seg_regex += re.escape(segment[pos:param.start()])
            pos = param.end()
            spec = param.group(1).strip()
            catch_all = spec.startswith("*")
            spec = spec.lstrip("*")
            default = None
            if "=" in spec:
                spec, default = spec.split("=", 1)
            is_optional = spec.endswith("?") or default is not None or catch_all
            spec = spec.rstrip("?")
            name, *constraint_texts = _split_constraints(spec) or [""]
            name = name.strip()
            if not name:
                raise RouteError(f"route {template!r} has a parameter without a name")
            group = f"p{len(groups)}"
            groups[group] = name
            if default is not None:
                defaults[name] = default
            if catch_all:
                if index != len(segments) - 1 or not whole:
                    raise RouteError(f"catch-all parameter in {template!r} must be the whole last segment")
                value_regex, seg_rank = ".*", _CATCHALL
            else:
                regexes = []
                for ctext in constraint_texts:
                    rx, check = _constraint(name, ctext)
                    if rx:
                        regexes.append(rx)
                    if check:
                        checks.append((name, check))
                value_regex = regexes[0] if regexes else r"[^/]+"
                for extra in regexes[1:]:  # further pattern constraints: checked after the match
                    checks.append((name, lambda v, rx=re.compile(extra, re.I): rx.fullmatch(v) is not None))
                rank = _CONSTRAINED if constraint_texts else _PLAIN
                seg_rank = max(seg_rank, _OPTIONAL if is_optional and whole else rank)
            seg_regex += f"(?P<{group}>{value_regex})"
            if is_optional and whole:
                optional = True
        seg_regex += re.escape(segment[pos:])
        pattern_parts.append(("/", seg_regex, optional))
        ranks.append(seg_rank)
    regex_text = ""
    for i, (_, part, optional) in enumerate(pattern_parts):
        sep = "/" if i else ""
        if optional:
            regex_text += f"(?:{sep}{part})?" if i else f"(?:{part})?"
        else:
            regex_text += sep + part
    try:
        compiled = re.compile(regex_text, re.IGNORECASE | re.DOTALL)
    except re.error as exc:
        raise RouteError(f"route {template!r} compiles to an invalid pattern: {exc}") from exc
    return RouteTemplate(template=template, regex=compiled, groups=groups, checks=checks,
                         defaults=defaults, ranks=tuple(ranks))


def sort_routes(items: list, key: Callable[[Any], RouteTemplate]) -> list:
    """Most specific first (ASP.NET-like precedence)."""
    return sorted(items, key=lambda item: (key(item).ranks, -len(key(item).ranks)))
