"""The installed package: console scripts, the Studio's command line, and the code layout (sizes, import direction)."""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import tflow
from tflow.studio import cli

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "tflow-studio": "tflow.studio.cli:main",
    "tflow-train": "tflow.tools.train:main",
    "tflow-evaluate": "tflow.tools.evaluate:main",
    "tflow-bench": "tflow.tools.bench:main",
    "tflow-pretrain": "tflow.tools.pretrain:main",
    "tflow-convert-release": "tflow.tools.convert_release:main",
    "tflow-score": "tflow.tools.score:main",
    "tflow-vllm": "tflow.engines.vllm_server:main",
}
# The Studio's modules, top to bottom: each may import only the ones after it (and the library).
STUDIO_ORDER = ("cli", "server", "wiring", "page", "benchmark_tab", "causal_section", "api", "render",
                "benchmark_run", "worker", "registry", "examples")


def script(name: str) -> str:
    """The console script installed beside this interpreter (pip puts them there)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: run `pip install -e .` (tests/run.sh does)")
    return str(path)


def test_the_package_is_installed_with_its_console_scripts():
    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("tflow-")}
    assert installed == SCRIPTS
    assert Path(tflow.__file__).resolve().parent == ROOT / "tflow", "the installed package is another checkout"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_answers_help(name):
    out = subprocess.run([script(name), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {name}")


def test_studio_help_mentions_the_login_and_its_module_loads_nothing_heavy():
    out = subprocess.run([script("tflow-studio"), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--auth USER:PASSWORD" in out.stdout and cli.AUTH_ENV in out.stdout
    probe = (
        "import sys, tflow.studio.cli; "
        "print(sorted({'gradio', 'torch', 'transformers', 'huggingface_hub'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert loaded.stdout.strip() == "[]", "the offline environment must be set before these load"


@pytest.mark.parametrize("value", ["no-colon-Zq9", ":only-a-password-Zq9", "user-Zq9:", "  :pw-Zq9"])
def test_a_malformed_login_is_one_line_without_the_secret_and_exit_2(value):
    for args, env in (([f"--auth={value}"], {}), ([], {cli.AUTH_ENV: value})):
        out = subprocess.run([script("tflow-studio"), *args], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", **env})
        assert out.returncode == 2
        assert out.stderr.strip().splitlines()[-1] == (
            f"tflow-studio: error: --auth / {cli.AUTH_ENV} must be USER:PASSWORD with a non-empty user and password"
        )
        assert "Zq9" not in out.stderr, "the message repeats what was typed (it may hold the password)"


def test_login_comes_from_the_flag_or_else_the_environment(monkeypatch):
    monkeypatch.setenv(cli.AUTH_ENV, "env-user:env:pass")
    assert cli.parse_args([]).auth == ("env-user", "env:pass")
    assert cli.parse_args(["--auth", "flag-user:pw"]).auth == ("flag-user", "pw")
    monkeypatch.delenv(cli.AUTH_ENV)
    assert cli.parse_args([]).auth is None


@pytest.mark.parametrize("auth", [None, "ada:pw-123"])
def test_a_public_host_without_login_warns_how_to_add_one(monkeypatch, capsys, auth):
    from tflow.studio import server

    seen = {}
    monkeypatch.setattr(server, "launch", lambda cfg, host, port, auth: seen.update(host=host, auth=auth))
    monkeypatch.delenv(cli.AUTH_ENV, raising=False)
    cli.main(["--host", "0.0.0.0", *(["--auth", auth] if auth else [])])
    err = capsys.readouterr().err
    assert seen["host"] == "0.0.0.0"
    if auth is None:
        assert seen["auth"] is None and "without a login" in err and f"{cli.AUTH_ENV}=USER:PASSWORD" in err
    else:
        assert seen["auth"] == ("ada", "pw-123") and "need the login of user 'ada'" in err and "pw-123" not in err


def _imports(path: Path) -> set[str]:
    """The tflow modules a file imports (relative imports resolved), e.g. {'tflow.studio.worker',
    'tflow.diagnostics.viz'}."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names = [f"{module}.{a.name}" for a in node.names] if node.module is None else [module]
            found.update(n for n in names if n.startswith("tflow"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tflow"))
    return found


def test_module_sizes_and_the_studios_import_direction():
    for path in (ROOT / "tflow").rglob("*.py"):
        lines = len(path.read_text().splitlines())
        limit = 300 if "studio" in path.parts else 500
        assert lines <= limit, f"{path.relative_to(ROOT)} has {lines} lines (limit {limit})"
    studio = ROOT / "tflow" / "studio"
    assert {p.stem for p in studio.glob("*.py")} == {*STUDIO_ORDER, "__init__"}
    for i, name in enumerate(STUDIO_ORDER):
        deps = {
            d.removeprefix("tflow.studio.") for d in _imports(studio / f"{name}.py") if d.startswith("tflow.studio.")
        }
        assert deps <= set(STUDIO_ORDER[i + 1 :]), (
            f"studio/{name}.py imports {sorted(deps - set(STUDIO_ORDER[i + 1 :]))} (upward)"
        )
    for path in (ROOT / "tflow").glob("*.py"):
        assert not any(d.startswith("tflow.studio") for d in _imports(path)), (
            f"library module {path.name} imports the Studio"
        )
        assert "gradio" not in path.read_text(), f"library module {path.name} mentions gradio"


def test_the_studio_starts_on_the_real_model_and_falls_back_to_the_embedded_world_with_its_specialist():
    args = cli.parse_args([])
    assert (args.model, args.fallback_model, Path(args.fallback_sender_model).name) == (
        "smollm2-135m-instruct",
        "tiny",
        "tiny-qwen3-kb",
    )
    assert args.sender_model is None
    explicit = cli.parse_args(["--model", "smollm2-135m-instruct"])
    assert explicit.fallback_model is None, "a model asked for by name does not fall back silently"


def test_the_embedded_backbone_brings_its_specialist_unless_told_otherwise():
    assert Path(cli.parse_args(["--model", "tiny"]).sender_model).name == "tiny-qwen3-kb"
    assert (
        Path(cli.parse_args(["--model", str(ROOT / "checkpoints" / "tiny-qwen3")]).sender_model).name == "tiny-qwen3-kb"
    )
    none = cli.parse_args(["--model", "tiny", "--sender-model", "none"])
    assert (
        none.sender_model is None and not none.load_specialists and cli.parse_args(["--model", "tiny"]).load_specialists
    )
    assert cli.parse_args(["--model", "some/other-model"]).sender_model is None
    assert cli.parse_args(["--model", "a", "--sender-model", "b"]).sender_model == "b"


def test_a_sender_model_that_cannot_load_is_one_line_and_exit_2():
    out = subprocess.run(
        [script("tflow-studio"), "--model", "tiny", "--sender-model", "/no/such/specialist", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("TFlow Studio cannot start: ") and "/no/such/specialist" in last, out.stderr


def _parsers_of(module: str) -> list:
    """The argparse parsers a command's main builds (captured at parse time, nothing runs)."""
    import argparse
    import importlib

    class Parsed(Exception):
        pass

    seen = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise Parsed

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        importlib.import_module(module).main([])
    except Parsed:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return seen


@pytest.mark.parametrize(
    "module",
    [
        "tflow.tools.train",
        "tflow.tools.evaluate",
        "tflow.tools.bench",
        "tflow.tools.pretrain",
        "tflow.tools.convert_release",
        "tflow.tools.score",
        "tflow.studio.cli",
    ],
)
def test_every_flag_of_every_command_has_a_help_string(module):
    parsers = _parsers_of(module)
    assert parsers, f"{module}.main built no parser"
    for parser in parsers:
        missing = [a.option_strings[0] for a in parser._actions if a.option_strings and a.help is None]
        assert not missing, f"{module}: flags without help: {missing}"
