"""The settings dataclasses, config/pbx-bridge.toml and docs/configuration.md agree on every key;
and the check that says so fails on a modified copy of each of the three."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_bridge import config
from pbx_bridge.config_reference import BEGIN, END, generate, problems, replace_block

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (ROOT / "config" / "pbx-bridge.toml").read_text()
DOC = (ROOT / "docs" / "configuration.md").read_text()
CONFIG_SOURCE = Path(config.__file__).read_text()


def changed(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@contextlib.contextmanager
def loaded(source: str, tmp_path: Path, name: str) -> Iterator[types.ModuleType]:
    """A changed config.py, loaded as a module of its own."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the dataclasses' string annotations resolve there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.fixture
def modified_config(tmp_path: Path) -> Iterator[types.ModuleType]:
    """config.py with one more key in [server], loaded as a module of its own."""
    source = changed(CONFIG_SOURCE, '    data_dir: str = "var"\n',
                     '    data_dir: str = "var"\n    # A key the sample and the document lack.\n'
                     '    colour: str = "blue"\n')
    with loaded(source, tmp_path, "modified_config") as module:
        yield module


def test_the_settings_the_sample_and_the_reference_agree() -> None:
    assert problems(config, SAMPLE, DOC) == []


def dataclass_keys(cls: type, path: str = "") -> Iterator[tuple[str, str]]:
    """(section header, key) of every field, walked here apart from the generator."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = hints[f.name]
        name = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            yield from dataclass_keys(hint, name)
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            yield from ((f"[[{name}]]", key) for _, key in dataclass_keys(typing.get_args(hint)[0], "x"))
        else:
            yield f"[{path}]", f.name


def test_every_key_of_the_settings_is_in_the_reference() -> None:
    block = DOC[DOC.index(BEGIN):DOC.index(END)] + "\n### "
    keys = list(dataclass_keys(config.Settings))
    assert len(keys) > 150
    for section, key in keys:
        part = block[block.index(f"\n### `{section}`\n"):]
        assert f"\n| `{key}` |" in part[: part.index("\n### ", 1)], (section, key)


def test_a_key_missing_from_the_sample_is_named() -> None:
    sample = changed(SAMPLE, "\nport = 8080\n", "\n")
    assert problems(config, sample, DOC) == [
        "server.port: in the settings, missing from config/pbx-bridge.toml"]


def test_a_commented_out_key_counts_and_a_prose_comment_does_not() -> None:
    # The [[pbx]] keys are only ever commented out: without that line, tls_verify is missing.
    without = changed(SAMPLE, "# tls_verify = true ", "# tls_verify is true ")
    assert problems(config, without, DOC) == [
        "pbx.tls_verify: in the settings, missing from config/pbx-bridge.toml"]


def test_a_key_the_settings_lack_is_named_set_or_commented_out() -> None:
    sample = changed(SAMPLE, "\n[server]\n", "\n[server]\n# colour = \"blue\"\n")
    sample = changed(sample, "\n[standby]\n", "\n[standby]\nquorum = 2\n")
    sample = changed(sample, "\n[web]\n", "\n[web.theme]\n[web]\n")
    assert problems(config, sample, DOC) == [
        "config/pbx-bridge.toml: [web.theme] is no section of the settings",
        "server.colour: in config/pbx-bridge.toml, not in the settings",
        "standby.quorum: in config/pbx-bridge.toml, not in the settings",
    ]


def test_a_value_that_is_not_the_default_is_named() -> None:
    sample = changed(SAMPLE, "\nport = 8080\n", "\nport = 8081\n")
    sample = changed(sample, "# port = 5038", "# port = 5039")
    assert problems(config, sample, DOC) == [
        "pbx.port: config/pbx-bridge.toml says 5039, the settings' default is 5038",
        "server.port: config/pbx-bridge.toml says 8081, the settings' default is 8080",
    ]


def test_a_new_field_in_the_settings_is_missing_from_the_sample_and_the_document(
        modified_config: types.ModuleType) -> None:
    assert problems(modified_config, SAMPLE, DOC) == [
        "docs/configuration.md is not the one generated from the settings: "
        "run `python -m pbx_bridge.config_reference`",
        "server.colour: in the settings, missing from config/pbx-bridge.toml",
    ]
    regenerated = replace_block(DOC, generate(modified_config))
    sample = changed(SAMPLE, '\ndata_dir = "var"\n', '\ndata_dir = "var"\ncolour = "blue"\n')
    assert problems(modified_config, sample, regenerated) == []
    assert '| `colour` | string | `"blue"` | A key the sample and the document lack. |' in regenerated


def test_a_field_without_a_comment_is_named(tmp_path: Path) -> None:
    source = changed(CONFIG_SOURCE, '    # Log every SQL statement (debugging only).\n', "")
    with loaded(source, tmp_path, "uncommented_config") as module:
        found = problems(module, SAMPLE, DOC)
    # echo follows auto_upgrade: it now shares that comment, so the document changes ...
    assert "docs/configuration.md is not the one generated from the settings: " \
           "run `python -m pbx_bridge.config_reference`" in found
    source = changed(CONFIG_SOURCE, "class LoggingConfig:\n    # The least severe level logged.\n",
                     "class LoggingConfig:\n")
    with loaded(source, tmp_path, "uncommented_config") as module:
        found = problems(module, SAMPLE, DOC)
    # ... while the first field of a class has nothing to share.
    assert "logging.level: no comment in config.py" in found


def test_a_document_edited_by_hand_or_without_its_markers_is_named() -> None:
    edited = changed(DOC, "| `port` | integer | `8080` |", "| `port` | integer | `8000` |")
    assert problems(config, SAMPLE, edited) == [
        "docs/configuration.md is not the one generated from the settings: "
        "run `python -m pbx_bridge.config_reference`"]
    found = problems(config, SAMPLE, DOC.replace(END, ""))
    assert len(found) == 1 and "lacks the markers" in found[0]


def test_the_command_checks_and_regenerates(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(changed(DOC, "| `port` | integer | `8080` |", "| `port` | integer | `8000` |"))
    command = [sys.executable, "-m", "pbx_bridge.config_reference"]
    ok = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*command, "--check", "--doc", str(stale)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "not the one generated" in bad.stderr
    assert "8000" in stale.read_text()  # --check writes nothing
    fixed = subprocess.run([*command, "--doc", str(stale)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert fixed.returncode == 0, fixed.stderr
    assert stale.read_text() == DOC
