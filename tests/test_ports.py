"""The adapters and the hand-written fakes implement the same ports (shared/ports.py).

mypy checks the assignments at the end of tests/helpers/fakes.py; this checks the same at
run time: every method of a port exists on each implementation, is a coroutine function,
and takes the port's parameters (same names, same kinds, defaults where the port has them);
an implementation may only add parameters that have defaults.
"""
from __future__ import annotations

import inspect

import pytest

from shared.adapters.exchange import ExchangeAdapter
from shared.adapters.graph import GraphAdapter
from shared.adapters.ledger import Ledger
from shared.adapters.queues import QueueSender
from shared.adapters.scores import ScoreStore
from shared.ports import ExchangePort, GraphPort, LedgerPort, QueuePort, ScoreStorePort
from tests.helpers.fakes import FakeExchange, FakeGraph, FakeLedger, FakeQueues

IMPLEMENTATIONS = [
    (LedgerPort, Ledger), (LedgerPort, FakeLedger),
    (QueuePort, QueueSender), (QueuePort, FakeQueues),
    (GraphPort, GraphAdapter), (GraphPort, FakeGraph),
    (ExchangePort, ExchangeAdapter), (ExchangePort, FakeExchange),
    (ScoreStorePort, ScoreStore),
]


def port_methods(port: type) -> list[str]:
    return sorted(name for name, value in vars(port).items() if inspect.isfunction(value) and not name.startswith("_"))


def mismatches(port: type, impl: type, name: str) -> list[str]:
    wanted = inspect.signature(getattr(port, name))
    found = getattr(impl, name, None)
    if found is None:
        return [f"{impl.__name__} has no {name}"]
    problems = []
    if inspect.iscoroutinefunction(getattr(port, name)) and not inspect.iscoroutinefunction(found):
        problems.append(f"{impl.__name__}.{name} is not async")
    have = inspect.signature(found).parameters
    for param in wanted.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            if not any(p.kind is p.VAR_KEYWORD for p in have.values()):
                problems.append(f"{impl.__name__}.{name} takes no **{param.name}")
            continue
        other = have.get(param.name)
        if other is None:
            problems.append(f"{impl.__name__}.{name} has no parameter {param.name}")
        elif other.kind is not param.kind:
            problems.append(f"{impl.__name__}.{name}({param.name}) is {other.kind.description}, the port says {param.kind.description}")
        elif param.default is not param.empty and other.default is other.empty:
            problems.append(f"{impl.__name__}.{name}({param.name}) has no default")
    for extra in set(have) - set(wanted.parameters):
        if have[extra].default is have[extra].empty and have[extra].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                                 inspect.Parameter.VAR_POSITIONAL):
            problems.append(f"{impl.__name__}.{name} needs {extra}, which the port does not pass")
    return problems


@pytest.mark.parametrize("port,impl", IMPLEMENTATIONS, ids=lambda v: v.__name__)
def test_the_implementation_has_every_method_of_its_port_with_its_signature(port, impl):
    assert port_methods(port), f"{port.__name__} declares no methods"
    problems = [p for name in port_methods(port) for p in mismatches(port, impl, name)]
    assert problems == []


def test_a_missing_or_different_method_is_caught():
    class Port:
        async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str: ...
        async def gone(self) -> None: ...

    class Impl:
        async def send(self, queue: str, text: str) -> str:
            return ""

    problems = mismatches(Port, Impl, "send") + mismatches(Port, Impl, "gone")
    assert "Impl.send has no parameter body" in problems
    assert "Impl.send has no parameter visibility_timeout" in problems
    assert "Impl.send needs text, which the port does not pass" in problems
    assert "Impl has no gone" in problems
