"""Load a v2-programming-model function app and describe its functions for the local host.

The app's own decorators are the only list of functions: ``function_app.app.get_functions()``
is called exactly once (a second call raises on duplicate names) and every descriptor here is
derived from its result. Nothing else in the host keeps a list of function names.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import azure.functions as func

logger = logging.getLogger(__name__)

__all__ = [
    "AppLoadError",
    "FunctionInfo",
    "LoadedApp",
    "load_function_app",
    "SUPPORTED_TRIGGERS",
    "QUEUE_TRIGGER",
    "TIMER_TRIGGER",
    "HTTP_TRIGGER",
    "EVENT_HUB_TRIGGER",
]

QUEUE_TRIGGER = "queueTrigger"
TIMER_TRIGGER = "timerTrigger"
HTTP_TRIGGER = "httpTrigger"
EVENT_HUB_TRIGGER = "eventHubTrigger"
SUPPORTED_TRIGGERS = (QUEUE_TRIGGER, TIMER_TRIGGER, HTTP_TRIGGER, EVENT_HUB_TRIGGER)
CONTEXT_PARAM = "context"
MODULE_NAME = "function_app"


class AppLoadError(RuntimeError):
    """The function app could not be imported or indexed."""


def enum_value(value: Any) -> Any:
    """Decorator attributes are often enums (AuthLevel, HttpMethod, Cardinality): unwrap."""
    return value.value if isinstance(value, Enum) else value


@dataclass
class FunctionInfo:
    """One function of the app, as the host needs it."""

    name: str
    trigger_type: str
    trigger: Any  # the decorator's binding object (QueueTrigger, TimerTrigger, ...)
    user_function: Callable[..., Any]
    arg_name: str
    is_async: bool
    wants_context: bool
    directory: str
    unsupported: list = field(default_factory=list)  # human-readable descriptions

    def attr(self, name: str, default: Any = None) -> Any:
        """A trigger attribute (enums unwrapped)."""
        value = getattr(self.trigger, name, None)
        return default if value is None else enum_value(value)

    @property
    def supported(self) -> bool:
        return self.trigger_type in SUPPORTED_TRIGGERS

    def disabled_setting(self) -> str:
        return f"AzureWebJobs.{self.name}.Disabled"

    def is_disabled(self, environ=None) -> bool:
        """The real host's ``AzureWebJobs.<name>.Disabled`` app setting."""
        environ = os.environ if environ is None else environ
        return str(environ.get(self.disabled_setting(), "")).strip().lower() in ("1", "true")


@dataclass
class LoadedApp:
    app: Any
    module: Any
    functions: list  # of FunctionInfo, in declaration order
    app_dir: str
    _previous_module: Any = None
    _path_inserted: bool = False

    def get(self, name: str) -> Optional[FunctionInfo]:
        for info in self.functions:
            if info.name.lower() == name.lower():  # function names are case-insensitive
                return info
        return None

    def unload(self) -> None:
        """Undo the import side effects (for in-process use: tests load several apps)."""
        if sys.modules.get(MODULE_NAME) is self.module:
            if self._previous_module is not None:
                sys.modules[MODULE_NAME] = self._previous_module
            else:
                sys.modules.pop(MODULE_NAME, None)
        if self._path_inserted:
            try:
                sys.path.remove(self.app_dir)
            except ValueError:
                pass


def _import_app_module(app_dir: str):
    script = Path(app_dir) / f"{MODULE_NAME}.py"
    if not script.is_file():
        raise AppLoadError(f"{script} not found: the app dir must contain function_app.py")
    previous = sys.modules.get(MODULE_NAME)
    if previous is not None:
        prev_file = getattr(previous, "__file__", None)
        if prev_file and Path(prev_file).resolve() == script.resolve():
            return previous, None, False
        sys.modules.pop(MODULE_NAME)
    inserted = False
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
        inserted = True
    try:
        module = importlib.import_module(MODULE_NAME)
    except Exception as exc:
        if previous is not None:
            sys.modules[MODULE_NAME] = previous
        if inserted:
            sys.path.remove(app_dir)
        raise AppLoadError(f"importing {script} failed: {type(exc).__name__}: {exc}") from exc
    return module, previous, inserted


def _find_app_object(module) -> Any:
    app = getattr(module, "app", None)
    if isinstance(app, func.FunctionApp):
        return app
    candidates = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(candidates) == 1:
        return candidates[0]
    raise AppLoadError(
        "function_app.py must define exactly one azure.functions.FunctionApp (conventionally 'app'); "
        f"found {len(candidates)}"
    )


def _describe(fn: Any, directory: str) -> FunctionInfo:
    name = fn.get_function_name()
    trigger = fn.get_trigger()
    user_function = fn.get_user_function()
    trigger_type = getattr(trigger, "type", None) or "unknown"
    arg_name = getattr(trigger, "name", None) or "req"
    unsupported = []
    for binding in fn.get_bindings():
        if binding is trigger:
            continue
        btype = getattr(binding, "type", "?")
        bname = getattr(binding, "name", "?")
        if trigger_type == HTTP_TRIGGER and btype == "http" and bname == "$return":
            continue  # the HTTP response output: handled
        unsupported.append(f"binding {btype} '{bname}'")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(user_function).parameters
    except (TypeError, ValueError):
        params = {}
    wants_context = CONTEXT_PARAM in params and arg_name != CONTEXT_PARAM
    bound_names = {getattr(b, "name", None) for b in fn.get_bindings()}
    for pname, param in params.items():
        if pname in (arg_name, CONTEXT_PARAM) or param.default is not inspect.Parameter.empty:
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if pname not in bound_names:
            unsupported.append(f"parameter '{pname}' has no binding")
    if trigger_type not in SUPPORTED_TRIGGERS:
        unsupported.insert(0, f"trigger {trigger_type}")
    return FunctionInfo(
        name=name,
        trigger_type=trigger_type,
        trigger=trigger,
        user_function=user_function,
        arg_name=arg_name,
        is_async=inspect.iscoroutinefunction(user_function),
        wants_context=wants_context,
        directory=directory,
        unsupported=unsupported,
    )


def load_function_app(app_dir: os.PathLike | str) -> LoadedApp:
    """Import ``function_app.py`` from ``app_dir`` and index its functions (once)."""
    app_dir = str(Path(app_dir).resolve())
    module, previous, inserted = _import_app_module(app_dir)
    try:
        app = _find_app_object(module)
        try:
            functions = app.get_functions()  # exactly once: a second call raises on duplicates
        except Exception as exc:
            raise AppLoadError(f"indexing the function app failed: {type(exc).__name__}: {exc}") from exc
    except AppLoadError:
        if sys.modules.get(MODULE_NAME) is module:
            sys.modules.pop(MODULE_NAME, None)
            if previous is not None:
                sys.modules[MODULE_NAME] = previous
        if inserted:
            sys.path.remove(app_dir)
        raise
    infos = [_describe(fn, app_dir) for fn in functions]
    for info in infos:
        if info.unsupported:
            logger.warning(
                "Function '%s' declares what the local host does not support (its invocations may fail): %s",
                info.name, "; ".join(info.unsupported),
            )
    return LoadedApp(
        app=app, module=module, functions=infos, app_dir=app_dir,
        _previous_module=previous, _path_inserted=inserted,
    )
