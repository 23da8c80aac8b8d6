"""A small, strict evaluator for the Bicep expressions in infra/main.bicep, for offline tests.

No Bicep compiler is reachable offline, and pycep-parser's JSON is a syntax check, not a
semantic model (it drops the difference between 'text' and identifiers, and binds `.` looser
than `==`). The tests need the *values* main.bicep computes -- the app settings it deploys,
the Graph app roles, Exchange roles and directory roles it grants for a given PLAYBOOK_STEPS and
MFA_MODE -- so this module parses Bicep declarations (param, var, output, module, resource)
and evaluates `var`/`output` expressions with Bicep's precedence and ARM's function semantics
for the functions main.bicep uses. Anything else raises BicepEvalError naming it, so a new
construct fails a test loudly instead of being guessed.

Values known only during a deployment (module outputs, resource properties, tenant(),
subscription()) evaluate to ``Runtime`` placeholders such as ``Runtime('identity.outputs.clientId')``.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class BicepEvalError(Exception):
    pass


class Runtime(str):
    """A value only the deployment knows; property access and indexing stay placeholders."""

    def attr(self, name: str) -> "Runtime":
        return Runtime(f"{self}.{name}")

    def __repr__(self) -> str:
        return f"Runtime({str(self)!r})"


# -- tokens ------------------------------------------------------------------------------

TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>//[^\n]*)
  | (?P<block>/\*.*?\*/)
  | (?P<nl>\n)
  | (?P<number>\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>')
  | (?P<op>=>|==|!=|=~|!~|&&|\|\||\?\?|<=|>=|[-+*/%<>!?:.,()\[\]{}=@])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class Tok:
    kind: str  # nl number ident string op eof
    value: Any
    line: int


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos, line = 0, 1
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m:
            raise BicepEvalError(f"line {line}: cannot tokenize {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind == "string":
            parts, pos = _read_string(text, m.end(), line)
            toks.append(Tok("string", parts, line))
            line += sum(p.count("\n") for p in parts if isinstance(p, str))
            continue
        value = m.group()
        if kind == "nl":
            toks.append(Tok("nl", "\n", line))
            line += 1
        elif kind == "block":
            line += value.count("\n")
        elif kind in ("number", "ident", "op"):
            toks.append(Tok(kind, int(value) if kind == "number" else value, line))
        pos = m.end()
    toks.append(Tok("eof", None, line))
    return toks


def _read_string(text: str, pos: int, line: int) -> tuple[list[Any], int]:
    """A '...' string: a list of literal parts (str) and interpolations (token lists)."""
    parts: list[Any] = []
    buf = []
    while True:
        if pos >= len(text):
            raise BicepEvalError(f"line {line}: unterminated string")
        ch = text[pos]
        if ch == "\\":
            nxt = text[pos + 1]
            buf.append({"n": "\n", "r": "\r", "t": "\t", "'": "'", "\\": "\\", "$": "$"}.get(nxt, nxt))
            pos += 2
        elif ch == "'":
            pos += 1
            break
        elif text.startswith("${", pos):
            if buf:
                parts.append("".join(buf))
                buf = []
            depth, end = 1, pos + 2
            while depth:
                if text[end] == "{":
                    depth += 1
                elif text[end] == "}":
                    depth -= 1
                elif text[end] == "'":  # a nested string: skip it
                    _, end = _read_string(text, end + 1, line)
                    continue
                end += 1
            inner = tokenize(text[pos + 2:end - 1])
            parts.append(inner)
            pos = end
        else:
            buf.append(ch)
            pos += 1
    if buf or not parts:
        parts.append("".join(buf))
    return parts, pos


# -- AST ---------------------------------------------------------------------------------

@dataclass
class Node:
    kind: str
    args: tuple = ()
    line: int = 0


@dataclass
class Decl:
    keyword: str  # param var output module resource
    name: str
    expr: Node | None
    type: str = ""
    decorators: list[Node] = field(default_factory=list)
    line: int = 0


BINARY = [  # lowest to highest precedence (Bicep)
    ("??",),
    ("||",),
    ("&&",),
    ("==", "!=", "=~", "!~"),
    ("<", ">", "<=", ">="),
    ("+", "-"),
    ("*", "/", "%"),
]


class Parser:
    def __init__(self, toks: list[Tok]):
        self.toks = toks
        self.i = 0

    # helpers
    def peek(self, k: int = 0) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: Any = None, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == kind and (value is None or tok.value == value)

    def expect(self, kind: str, value: Any = None) -> Tok:
        if not self.at(kind, value):
            tok = self.peek()
            raise BicepEvalError(f"line {tok.line}: expected {value or kind}, got {tok.value!r}")
        return self.next()

    def skip_nl(self) -> None:
        while self.at("nl"):
            self.next()

    # declarations
    def declarations(self) -> list[Decl]:
        decls: list[Decl] = []
        decorators: list[Node] = []
        while True:
            self.skip_nl()
            tok = self.peek()
            if tok.kind == "eof":
                return decls
            if tok.kind == "op" and tok.value == "@":
                self.next()
                decorators.append(self.postfix())
                continue
            if tok.kind != "ident":
                raise BicepEvalError(f"line {tok.line}: unexpected {tok.value!r}")
            keyword = self.next().value
            if keyword == "targetScope":
                self.expect("op", "=")
                self.expr()
            elif keyword in ("extension", "import"):
                while not self.at("nl") and not self.at("eof"):
                    self.next()
            elif keyword == "param":
                name = self.expect("ident").value
                type_ = self.expect("ident").value
                default = None
                if self.at("op", "="):
                    self.next()
                    default = self.expr()
                decls.append(Decl("param", name, default, type_, decorators, tok.line))
            elif keyword == "var":
                name = self.expect("ident").value
                self.expect("op", "=")
                decls.append(Decl("var", name, self.expr(), "", decorators, tok.line))
            elif keyword == "output":
                name = self.expect("ident").value
                type_ = self.expect("ident").value
                self.expect("op", "=")
                decls.append(Decl("output", name, self.expr(), type_, decorators, tok.line))
            elif keyword in ("module", "resource"):
                name = self.expect("ident").value
                type_ = "".join(p for p in self.expect("string").value if isinstance(p, str))
                if self.at("ident", "existing"):
                    self.next()
                self.expect("op", "=")
                decls.append(Decl(keyword, name, self.body(), type_, decorators, tok.line))
            else:
                raise BicepEvalError(f"line {tok.line}: unsupported declaration {keyword!r}")
            decorators = []

    def body(self) -> Node:
        if self.at("ident", "if"):
            line = self.next().line
            self.expect("op", "(")
            cond = self.expr()
            self.expect("op", ")")
            return Node("if", (cond, self.body()), line)
        return self.expr()

    # expressions
    def expr(self) -> Node:
        cond = self.binary(0)
        if self.at("op", "?"):
            line = self.next().line
            self.skip_nl()
            yes = self.expr()
            self.skip_nl()
            self.expect("op", ":")
            self.skip_nl()
            no = self.expr()
            return Node("ternary", (cond, yes, no), line)
        return cond

    def binary(self, level: int) -> Node:
        if level == len(BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.at("op") and self.peek().value in BINARY[level]:
            op = self.next()
            self.skip_nl()
            left = Node("binary", (op.value, left, self.binary(level + 1)), op.line)
        return left

    def unary(self) -> Node:
        if self.at("op", "!") or self.at("op", "-"):
            op = self.next()
            return Node("unary", (op.value, self.unary()), op.line)
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.at("op", "."):
                line = self.next().line
                name = self.expect("ident").value
                if self.at("op", "("):  # sys.fn() / az.fn()
                    node = Node("call", (f"{node.args[0]}.{name}", self.call_args()), line)
                else:
                    node = Node("prop", (node, name), line)
            elif self.at("op", "["):
                line = self.next().line
                self.skip_nl()
                index = self.expr()
                self.skip_nl()
                self.expect("op", "]")
                node = Node("index", (node, index), line)
            else:
                return node

    def call_args(self) -> tuple[Node, ...]:
        self.expect("op", "(")
        args = []
        self.skip_nl()
        while not self.at("op", ")"):
            args.append(self.lambda_or_expr())
            self.skip_nl()
            if self.at("op", ","):
                self.next()
                self.skip_nl()
        self.expect("op", ")")
        return tuple(args)

    def lambda_or_expr(self) -> Node:
        if self.at("ident") and self.at("op", "=>", 1):
            name = self.next().value
            line = self.next().line
            return Node("lambda", ((name,), self.expr()), line)
        if self.at("op", "("):  # (a, b) => ...
            j, names = self.i + 1, []
            while self.toks[j].kind == "ident" and self.toks[j + 1].value in (",", ")"):
                names.append(self.toks[j].value)
                j += 1
                if self.toks[j].value == ")":
                    break
                j += 1
            if names and self.toks[j].value == ")" and self.toks[j + 1].value == "=>":
                self.i = j + 2
                return Node("lambda", (tuple(names), self.expr()), self.toks[j].line)
        return self.expr()

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind == "number":
            self.next()
            return Node("lit", (tok.value,), tok.line)
        if tok.kind == "string":
            self.next()
            parts = tuple(p if isinstance(p, str) else Parser(p).expr_all() for p in tok.value)
            return Node("str", parts, tok.line)
        if tok.kind == "ident":
            self.next()
            if tok.value in ("true", "false"):
                return Node("lit", (tok.value == "true",), tok.line)
            if tok.value == "null":
                return Node("lit", (None,), tok.line)
            if tok.value == "for":
                raise BicepEvalError(f"line {tok.line}: 'for' outside brackets")
            if self.at("op", "("):
                return Node("call", (tok.value, self.call_args()), tok.line)
            return Node("ref", (tok.value,), tok.line)
        if tok.kind == "op" and tok.value == "(":
            self.next()
            self.skip_nl()
            inner = self.expr()
            self.skip_nl()
            self.expect("op", ")")
            return inner
        if tok.kind == "op" and tok.value == "[":
            return self.array()
        if tok.kind == "op" and tok.value == "{":
            return self.object()
        raise BicepEvalError(f"line {tok.line}: unexpected {tok.value!r}")

    def expr_all(self) -> Node:
        node = self.expr()
        self.skip_nl()
        if not self.at("eof"):
            raise BicepEvalError(f"line {self.peek().line}: trailing {self.peek().value!r} in interpolation")
        return node

    def array(self) -> Node:
        line = self.expect("op", "[").line
        self.skip_nl()
        if self.at("ident", "for"):
            self.next()
            if self.at("op", "("):
                self.next()
                names = [self.expect("ident").value]
                self.expect("op", ",")
                names.append(self.expect("ident").value)
                self.expect("op", ")")
            else:
                names = [self.expect("ident").value]
            self.expect("ident", "in")
            source = self.expr()
            self.expect("op", ":")
            body = self.body()
            self.skip_nl()
            self.expect("op", "]")
            return Node("for", (tuple(names), source, body), line)
        items = []
        while not self.at("op", "]"):
            items.append(self.expr())
            if self.at("op", ","):
                self.next()
            self.skip_nl()
        self.expect("op", "]")
        return Node("array", tuple(items), line)

    def object(self) -> Node:
        line = self.expect("op", "{").line
        self.skip_nl()
        pairs = []
        while not self.at("op", "}"):
            tok = self.next()
            if tok.kind == "ident":
                key: Any = Node("str", (tok.value,), tok.line)
            elif tok.kind == "string":
                key = Node("str", tuple(p if isinstance(p, str) else Parser(p).expr_all() for p in tok.value), tok.line)
            else:
                raise BicepEvalError(f"line {tok.line}: bad object key {tok.value!r}")
            self.expect("op", ":")
            if self.at("ident", "resource"):
                raise BicepEvalError(f"line {tok.line}: nested resources are not supported")
            pairs.append((key, self.body()))
            if self.at("op", ","):
                self.next()
            self.skip_nl()
        self.expect("op", "}")
        return Node("object", tuple(pairs), line)


def parse(text: str) -> list[Decl]:
    return Parser(tokenize(text)).declarations()


# -- evaluation --------------------------------------------------------------------------

@dataclass
class Lambda:
    names: tuple[str, ...]
    body: Node
    scope: dict[str, Any]


def _union(*args: Any) -> Any:
    if all(isinstance(a, dict) for a in args):
        out: dict[str, Any] = {}
        for a in args:
            for k, v in a.items():
                out[k] = _union(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
        return out
    if all(isinstance(a, list) for a in args):
        out_list: list[Any] = []
        for a in args:
            for item in a:
                if item not in out_list:
                    out_list.append(item)
        return out_list
    raise BicepEvalError(f"union of mixed types {[type(a).__name__ for a in args]}")


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, dict):
        return any(k.lower() == str(item).lower() for k in container)
    if isinstance(container, str):
        return str(item) in container
    return item in container


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _unique_string(*parts: Any) -> str:
    if any(isinstance(p, Runtime) for p in parts):
        return Runtime(f"uniqueString({', '.join(map(str, parts))})")
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:13]


class Evaluator:
    """Evaluates one Bicep file's vars and outputs for given parameter values."""

    def __init__(self, path: Path, params: dict[str, Any] | None = None):
        self.path = Path(path)
        self.decls = parse(self.path.read_text(encoding="utf-8"))
        self.by_name = {d.name: d for d in self.decls}
        self.given = dict(params or {})
        unknown = set(self.given) - {d.name for d in self.decls if d.keyword == "param"}
        if unknown:
            raise BicepEvalError(f"not parameters of {self.path.name}: {sorted(unknown)}")
        self.cache: dict[str, Any] = {}
        self.stack: list[str] = []

    def decl(self, keyword: str, name: str) -> Decl:
        d = self.by_name.get(name)
        if d is None or d.keyword != keyword:
            raise BicepEvalError(f"no {keyword} {name!r} in {self.path.name}")
        return d

    def names(self, keyword: str) -> list[str]:
        return [d.name for d in self.decls if d.keyword == keyword]

    def param_allowed(self, name: str) -> list[Any] | None:
        for dec in self.decl("param", name).decorators:
            if dec.kind == "call" and dec.args[0] == "allowed":
                return self.eval(dec.args[1][0], {})
        return None

    def value(self, name: str) -> Any:
        """A param, var or output by name (memoized)."""
        if name in self.cache:
            return self.cache[name]
        if name in self.stack:
            raise BicepEvalError(f"cycle: {' -> '.join(self.stack + [name])}")
        d = self.by_name.get(name)
        if d is None:
            raise BicepEvalError(f"{name!r} is not declared in {self.path.name}")
        self.stack.append(name)
        try:
            if d.keyword == "param":
                if name in self.given:
                    result = self.given[name]
                elif d.expr is not None:
                    result = self.eval(d.expr, {})
                else:
                    raise BicepEvalError(f"parameter {name!r} has no default and no value")
            elif d.keyword in ("var", "output"):
                result = self.eval(d.expr, {})
            else:  # module / resource: only its outputs/properties, at deploy time
                result = Runtime(name)
        finally:
            self.stack.pop()
        self.cache[name] = result
        return result

    def module_params(self, name: str) -> dict[str, Node]:
        """The (unevaluated) params object of a module declaration."""
        body = self.decl("module", name).expr
        if body.kind == "if":
            body = body.args[1]
        for key, val in body.args:
            if self.eval(key, {}) == "params":
                return {self.eval(k, {}): v for k, v in val.args}
        raise BicepEvalError(f"module {name} has no params")

    def module_condition(self, name: str) -> Node | None:
        body = self.decl("module", name).expr
        return body.args[0] if body.kind == "if" else None

    # the interpreter
    def eval(self, node: Node, scope: dict[str, Any]) -> Any:
        kind = node.kind
        if kind == "lit":
            return node.args[0]
        if kind == "str":
            parts = [p if isinstance(p, str) else self.eval(p, scope) for p in node.args]
            text = "".join(_string(p) for p in parts)
            return Runtime(text) if any(isinstance(p, Runtime) for p in parts) else text
        if kind == "ref":
            name = node.args[0]
            return scope[name] if name in scope else self.value(name)
        if kind == "array":
            return [self.eval(n, scope) for n in node.args]
        if kind == "object":
            return {_string(self.eval(k, scope)): self.eval(v, scope) for k, v in node.args}
        if kind == "prop":
            target = self.eval(node.args[0], scope)
            name = node.args[1]
            if isinstance(target, Runtime):
                return target.attr(name)
            if not isinstance(target, dict):
                raise BicepEvalError(f"line {node.line}: .{name} on {type(target).__name__}")
            if name not in target:
                raise BicepEvalError(f"line {node.line}: no property {name!r} (has {sorted(target)[:12]})")
            return target[name]
        if kind == "index":
            target = self.eval(node.args[0], scope)
            index = self.eval(node.args[1], scope)
            if isinstance(target, Runtime):
                return target.attr(f"[{index}]")
            try:
                return target[index]
            except (KeyError, IndexError, TypeError):
                raise BicepEvalError(f"line {node.line}: index {index!r} not in {type(target).__name__}") from None
        if kind == "unary":
            op, operand = node.args
            value = self.eval(operand, scope)
            return (not self._bool(value, node)) if op == "!" else -value
        if kind == "binary":
            return self._binary(node, scope)
        if kind == "ternary":
            cond = self._bool(self.eval(node.args[0], scope), node)
            return self.eval(node.args[1] if cond else node.args[2], scope)
        if kind == "lambda":
            return Lambda(node.args[0], node.args[1], dict(scope))
        if kind == "call":
            return self._call(node, scope)
        raise BicepEvalError(f"line {node.line}: cannot evaluate {kind}")

    def _bool(self, value: Any, node: Node) -> bool:
        if isinstance(value, Runtime):
            raise BicepEvalError(f"line {node.line}: condition depends on a deploy-time value {value}")
        if not isinstance(value, bool):
            raise BicepEvalError(f"line {node.line}: expected a bool, got {value!r}")
        return value

    def _binary(self, node: Node, scope: dict[str, Any]) -> Any:
        op, left_node, right_node = node.args
        left = self.eval(left_node, scope)
        if op == "&&":
            return self._bool(left, node) and self._bool(self.eval(right_node, scope), node)
        if op == "||":
            return self._bool(left, node) or self._bool(self.eval(right_node, scope), node)
        if op == "??":
            return left if left is not None else self.eval(right_node, scope)
        right = self.eval(right_node, scope)
        if isinstance(left, Runtime) or isinstance(right, Runtime):
            raise BicepEvalError(f"line {node.line}: {op} on a deploy-time value")
        ops: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "=~": lambda a, b: str(a).lower() == str(b).lower(),
            "!~": lambda a, b: str(a).lower() != str(b).lower(),
            "<": lambda a, b: a < b, ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
            "+": lambda a, b: a + b, "-": lambda a, b: a - b,
            "*": lambda a, b: a * b, "/": lambda a, b: a // b, "%": lambda a, b: a % b,
        }
        return ops[op](left, right)

    def _apply(self, fn: Any, *args: Any) -> Any:
        if not isinstance(fn, Lambda):
            raise BicepEvalError(f"expected a lambda, got {fn!r}")
        if len(args) < len(fn.names):
            raise BicepEvalError("lambda takes more arguments than given")
        return self.eval(fn.body, {**fn.scope, **dict(zip(fn.names, args))})

    def _call(self, node: Node, scope: dict[str, Any]) -> Any:
        name, arg_nodes = node.args
        name = name.split(".")[-1]
        args = [self.eval(a, scope) for a in arg_nodes]
        if name == "loadJsonContent":
            data = json.loads((self.path.parent / args[0]).read_text(encoding="utf-8"))
            if len(args) > 1:
                raise BicepEvalError("loadJsonContent with a JSONPath is not supported here")
            return data
        if name in ("tenant", "subscription", "deployer", "resourceGroup"):
            return Runtime(f"{name}()")
        simple: dict[str, Callable[..., Any]] = {
            "union": _union,
            "contains": _contains,
            "empty": lambda v: v is None or (not isinstance(v, Runtime) and len(v) == 0),
            "string": _string,
            "toLower": lambda s: s.lower(),
            "toUpper": lambda s: s.upper(),
            "trim": lambda s: s.strip(),
            "split": lambda s, d: s.split(d),
            "join": lambda a, d: d.join(_string(x) for x in a),
            "concat": lambda *a: sum(a, []) if all(isinstance(x, list) for x in a) else "".join(map(_string, a)),
            "flatten": lambda a: [y for x in a for y in x],
            "first": lambda a: a[0] if len(a) else None,
            "last": lambda a: a[-1] if len(a) else None,
            "length": len,
            "items": lambda o: [{"key": k, "value": o[k]} for k in sorted(o, key=str.lower)],
            "objectKeys": lambda o: list(o),
            "intersection": lambda *a: [x for x in a[0] if all(x in b for b in a[1:])],
            "uniqueString": _unique_string,
            "take": lambda v, n: v[:n],
            "bool": lambda v: v if isinstance(v, bool) else str(v).lower() == "true",
        }
        if name in simple:
            if any(isinstance(a, Runtime) for a in args) and name not in ("union", "string", "uniqueString"):
                if name in ("toLower", "toUpper", "trim", "take"):  # text of a deploy-time value
                    return Runtime(f"{name}({', '.join(map(str, args))})")
                raise BicepEvalError(f"line {node.line}: {name}() on a deploy-time value")
            return simple[name](*args)
        if name == "map":
            return [self._apply(args[1], x, i) for i, x in enumerate(args[0])]
        if name == "filter":
            return [x for i, x in enumerate(args[0]) if self._bool(self._apply(args[1], x, i), node)]
        if name == "toObject":
            value_fn = args[2] if len(args) > 2 else None
            return {self._apply(args[1], x): (self._apply(value_fn, x) if value_fn else x) for x in args[0]}
        if name == "reduce":
            acc = args[1]
            for i, x in enumerate(args[0]):
                acc = self._apply(args[2], acc, x, i)
            return acc
        raise BicepEvalError(f"line {node.line}: function {name}() is not supported by tools/bicep_eval.py")


def evaluate(path: str | Path, params: dict[str, Any] | None = None) -> Evaluator:
    return Evaluator(Path(path), params)
