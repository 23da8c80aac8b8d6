"""infra/ validated offline: every .bicep file parses, checkov's Bicep checks pass, azure.yaml is sane.

pycep-parser and checkov live in their own environment, .tools/infra (tools/setup_infra_tools.sh,
pins in requirements-infra.txt), never in the app's .venv: these tests run them as subprocesses.
Nothing here touches the network: BC_SKIP_MAPPING=TRUE and --skip-download keep checkov offline.

tools/bicep_eval.py (a small evaluator of main.bicep's expressions, shared with the other
infra tests through tests/helpers/infra.py) is tested below on its own.
"""
from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from tests.helpers.infra import BICEP_FILES, INFRA, ROOT, SETUP, bicep_eval, offline_env, tool

# Skip reasons must say why; checkov's placeholder for a bare skip is "No comment provided".
MIN_REASON_CHARS = 40


# -- pycep ---------------------------------------------------------------------------------

PARSE_ALL = r"""
import json, sys
from importlib.metadata import version
from pathlib import Path
from pycep import BicepParser
parser = BicepParser(add_line_numbers=True)
out = {"pycep": version("pycep-parser"), "files": {}}
for name in sys.argv[1:]:
    try:
        tree = parser.parse(file_path=Path(name))
        out["files"][name] = {"ok": True, "keys": sorted(tree)}
    except Exception as exc:  # report every file, not just the first failure
        out["files"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
print(json.dumps(out))
"""


@lru_cache(maxsize=1)
def pycep_results() -> dict:
    python = tool("python")
    proc = subprocess.run([str(python), "-c", PARSE_ALL, *map(str, BICEP_FILES)], capture_output=True, text=True,
                          env=offline_env(), timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_there_is_bicep_to_check():
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "modules/graph-app-roles.bicep", "modules/functionapp.bicep", "modules/storage.bicep"} <= names


def test_every_bicep_file_parses_with_pycep():
    results = pycep_results()
    assert results["pycep"] == "0.7.1", f"pycep-parser {results['pycep']} in .tools/infra; run `bash {SETUP}`"
    failures = {Path(f).relative_to(ROOT).as_posix(): r["error"] for f, r in results["files"].items() if not r["ok"]}
    assert not failures, "Bicep files pycep-parser cannot parse:\n" + "\n".join(f"{f}: {e}" for f, e in failures.items())
    assert len(results["files"]) == len(BICEP_FILES)


def test_graph_extension_file_is_the_one_pycep_0_5_could_not_read():
    text = (INFRA / "modules" / "graph-app-roles.bicep").read_text()
    assert "extension microsoftGraphV1" in text.splitlines()
    tree_keys = pycep_results()["files"][str(INFRA / "modules" / "graph-app-roles.bicep")]["keys"]
    assert "extensions" in tree_keys
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    assert config["extensions"]["microsoftGraphV1"].startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")


# -- checkov -------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def checkov_report() -> dict:
    checkov = tool("checkov")
    proc = subprocess.run(
        [str(checkov), "-d", "infra", "--framework", "bicep", "--skip-download", "-o", "json"],
        capture_output=True, text=True, env=offline_env(), timeout=600, cwd=ROOT,
    )
    # checkov exits 1 when a check fails; the report says which.
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    return report


def test_checkov_bicep_checks_pass():
    report = checkov_report()
    summary = report["summary"]
    failed = report["results"]["failed_checks"]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert not failed, "checkov failed checks (fix them, or skip inside the resource with a reason):\n" + "\n".join(
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range']})" for c in failed)
    assert summary["failed"] == 0
    assert summary["passed"] >= 20 and summary["resource_count"] >= 30, summary


def test_every_checkov_skip_is_justified_inline():
    skipped = checkov_report()["results"]["skipped_checks"]
    weak = [f"{c['check_id']} on {c['resource']}: {c.get('check_result', {}).get('suppress_comment')!r}"
            for c in skipped if len(c.get("check_result", {}).get("suppress_comment") or "") < MIN_REASON_CHARS
            or c["check_result"]["suppress_comment"] == "No comment provided"]
    assert not weak, "skips without a real reason:\n" + "\n".join(weak)
    # Every skip is an inline comment in a .bicep file (no --skip-check on the command line).
    inline = sum(p.read_text().count("//checkov:skip=") for p in BICEP_FILES)
    assert inline == len(skipped), (inline, len(skipped))


def test_checkov_scanned_every_module():
    report = checkov_report()["results"]
    scanned = {c["file_path"].lstrip("/") for kind in ("passed_checks", "skipped_checks") for c in report[kind]}
    for module in ("storage", "functionapp", "eventhubs", "keyvault"):
        assert f"modules/{module}.bicep" in scanned, scanned


# -- azure.yaml ----------------------------------------------------------------------------

YAML_CHECK = r"""
import json, sys, yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
"""


def test_azure_yaml_deploys_the_function_app_and_runs_the_post_provision_script():
    proc = subprocess.run([str(tool("python")), "-c", YAML_CHECK, str(ROOT / "azure.yaml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    azd = json.loads(proc.stdout)
    assert azd["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    api = azd["services"]["api"]
    assert (api["project"], api["language"], api["host"]) == (".", "python", "function")
    hook = azd["hooks"]["postprovision"]
    for shell in ("posix", "windows"):
        assert "infra/scripts/postprovision.py" in hook[shell]["run"]
        assert hook[shell]["continueOnError"] is False
    verify = azd["hooks"]["postdeploy"]
    for shell in ("posix", "windows"):
        assert verify[shell]["run"].endswith("infra/scripts/postprovision.py --verify-auth")
        assert verify[shell]["continueOnError"] is False
    # azd finds the app by this tag.
    assert "'azd-service-name': 'api'" in (INFRA / "modules" / "functionapp.bicep").read_text()


# -- tools/bicep_eval.py on its own -----------------------------------------------------------

def _eval_snippet(tmp_path: Path, text: str, name: str, **params):
    path = tmp_path / "snippet.bicep"
    path.write_text(text)
    return bicep_eval().evaluate(path, params).value(name)


def test_bicep_eval_precedence_and_functions(tmp_path):
    text = """
param steps string = 'a, b'
var o = { kind: 'step', by: 'b' }
var list = map(split(steps, ','), s => trim(s))
var member = o.kind == 'component' || contains(list, o.by) && !empty(list)
var picked = filter([1, 2, 3], x => x > 1)
var merged = union({ a: '1', b: '2' }, { b: '3' })
var uniq = union(['x', 'y'], ['y', 'z'])
var keyed = toObject(['p', 'q'], k => 'k-${k}', k => toLower('V${k}'))
var cond = empty(steps) ? 'none' : 'some'
var nested = flatten(map(['q1'], q => [
  q
  '${q}-poison'
]))
var dropEmpty = toObject(filter(items({ A: 'x', B: '' }), kv => !empty(string(kv.value))), kv => kv.key, kv => kv.value)
"""
    assert _eval_snippet(tmp_path, text, "list") == ["a", "b"]
    assert _eval_snippet(tmp_path, text, "member") is True  # && binds tighter than ||; . tighter than ==
    assert _eval_snippet(tmp_path, text, "picked") == [2, 3]
    assert _eval_snippet(tmp_path, text, "merged") == {"a": "1", "b": "3"}
    assert _eval_snippet(tmp_path, text, "uniq") == ["x", "y", "z"]
    assert _eval_snippet(tmp_path, text, "keyed") == {"k-p": "vp", "k-q": "vq"}
    assert _eval_snippet(tmp_path, text, "cond") == "some"
    assert _eval_snippet(tmp_path, text, "nested") == ["q1", "q1-poison"]
    assert _eval_snippet(tmp_path, text, "dropEmpty") == {"A": "x"}
    assert _eval_snippet(tmp_path, text, "member", steps="c") is False


def test_bicep_eval_refuses_what_it_does_not_know(tmp_path):
    ev = bicep_eval()
    with pytest.raises(ev.BicepEvalError, match="not supported"):
        _eval_snippet(tmp_path, "var x = dateTimeAdd('2020', 'P1D')\n", "x")
    with pytest.raises(ev.BicepEvalError, match="no property"):
        _eval_snippet(tmp_path, "var o = { a: 1 }\nvar x = o.b\n", "x")


def test_bicep_eval_reads_every_infra_file():
    for path in BICEP_FILES:
        bicep_eval().parse(path.read_text())
