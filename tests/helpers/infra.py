"""Helpers of the infra tests (tests/test_infra_*.py): paths, the IaC tool environment
(.tools/infra) and tools/ modules loaded from their path (gen_infra, bicep_eval)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TOOLS_BIN = ROOT / ".tools" / "infra" / "bin"
SETUP = "tools/setup_infra_tools.sh"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


def tool(name: str) -> Path:
    """A program of the IaC tool environment; fails (never skips) when it is missing."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing: the IaC tools (checkov, pycep-parser) live in their own "
            f"environment. Create it with `bash {SETUP}` (idempotent; pins in requirements-infra.txt).",
            pytrace=False,
        )
    return path


def offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env["BC_SKIP_MAPPING"] = "TRUE"  # else checkov fetches a check-id mapping from the network
    env["CHECKOV_RUN_SCA_PACKAGE_SCAN_V2"] = "false"
    env.pop("BC_API_KEY", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def load_tool(name: str) -> ModuleType:
    """A module of tools/ (gen_infra, bicep_eval), imported from its path."""
    module_name = f"_infra_tools_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"tools/{name}.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def bicep_eval() -> Any:
    return load_tool("bicep_eval")


def main_bicep(**params: Any) -> Any:
    """main.bicep evaluated for these parameter values (required ones defaulted)."""
    params.setdefault("environmentName", "test")
    params.setdefault("location", "swedencentral")
    return bicep_eval().evaluate(INFRA / "main.bicep", params)
