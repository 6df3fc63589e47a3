from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hwnas
from hwnas.spaces import Architecture, get_space

from conftest import run_cli


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_arch_show_f1_table_and_totals() -> None:
    proc = run_cli("arch", "show", "FBNetV2-F1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ir_k5_e5.4566_c24_s2" in out and "(1600, 1, 1)" in out
    assert "56.411" in out and "5999.4" in out  # totals: MFLOPs and params (K)
    assert "r128 conv_k3_c8_s2_hs" in out


def test_arch_show_reads_a_file_and_json_option(tmp_path: Path) -> None:
    arch = get_space("cifar").sample(3)
    path = tmp_path / "a.json"
    arch.save(path)
    proc = run_cli("arch", "show", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert Architecture.from_dict(json.loads(proc.stdout)) == arch
    proc = run_cli("arch", "show", str(path), "--resolution", "24")
    assert proc.returncode == 0 and "@ 24 px" in proc.stdout


def test_arch_sample_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    proc = run_cli("arch", "sample", "tiny", "--seed", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert Architecture.load(out) == get_space("tiny").sample(5)


def test_space_show_and_list() -> None:
    proc = run_cli("space", "show", "cifar")
    assert proc.returncode == 0, proc.stderr
    space = get_space("cifar")
    assert f"{space.size():.3e}" in proc.stdout
    assert f"distinct kernels: {len(space.kernels())}" in proc.stdout
    proc = run_cli("space", "show", "tiny", "--kernels")
    assert proc.stdout.split() == [k.key for k in get_space("tiny").kernels()]
    proc = run_cli("space", "list")
    assert all(name in proc.stdout for name in ("fbnetv2", "cifar", "tiny", "cifar-wide-tied"))


def test_space_show_marks_tied_layers_and_counts_their_options_at_one_width() -> None:
    proc = run_cli("space", "show", "cifar-wide-tied")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "(tied)" in line]
    space = get_space("cifar-wide-tied")
    tied = [layer for layer in space.layers if layer.tied]
    assert len(rows) == len(tied) == 7
    # 4 IR ops x 3 expansions + skip at the stage's width
    assert all(row.split("│")[-2].strip() == "13" for row in rows)
    assert f"{space.size():.3e}" in proc.stdout


def test_space_show_yaml_is_a_loadable_template(tmp_path: Path) -> None:
    proc = run_cli("space", "show", "fbnetv2", "--yaml")
    path = tmp_path / "mine.yaml"
    path.write_text(proc.stdout)
    mine = get_space(str(path))
    assert mine.name == "my-fbnetv2"  # errors in the user's copy must not talk about the preset
    assert dataclasses.replace(mine, name="fbnetv2") == get_space("fbnetv2")


ARCH_OK = {
    "resolution": 32,
    "num_classes": 10,
    "blocks": [{"op": "conv_k3", "c": 16, "s": 2}, {"op": "ir_k3", "c": 16, "e": 3}],
}


@pytest.mark.parametrize(
    ("blocks", "field", "allowed"),
    [
        ([{"op": "conv_k3", "c": 16}, {"op": "ir_k7", "c": 16, "e": 3}], "blocks[1].op", "ir_k{3,5}"),
        ([{"op": "conv_k3", "c": -4}], "blocks[0].c", ">= 1"),
        ([{"op": "conv_k3", "c": 16, "s": 4}], "blocks[0].s", "allowed: 1, 2"),
        ([{"op": "ir_k3", "c": 16}], "blocks[0].e", "missing required field"),
        ([{"op": "conv_k3", "c": 16.5}], "blocks[0].c", "expected an integer"),
        ([{"c": 16}], "blocks[0].op", "missing required field"),
    ],
)
def test_bad_architecture_file(tmp_path: Path, blocks: list, field: str, allowed: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**ARCH_OK, "blocks": blocks}))
    _assert_one_line_error(run_cli("arch", "show", str(path)), str(path), field, allowed)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("garbage.json", b"{not json", ["not valid JSON", "line 1"]),
        ("garbage.yaml", b"blocks: [unclosed\n  - {", ["not valid JSON or YAML"]),
        ("binary.yaml", bytes(range(256)), ["not UTF-8"]),
        ("text.yaml", b"just some words\n", ["expected a mapping", "a string"]),
        ("empty.json", b"", ["not valid JSON"]),
    ],
)
def test_files_that_are_not_json_or_yaml(tmp_path: Path, name: str, content: bytes, words: list[str]) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    _assert_one_line_error(run_cli("arch", "show", str(path)), str(path), *words)
    _assert_one_line_error(run_cli("space", "show", str(path)), str(path), *words)


@pytest.mark.parametrize(
    ("change", "field", "allowed"),
    [
        ({"ops": ["ir_k3", "ir_k11"]}, "stages[1].ops[1]", "allowed"),
        ({"channels": [16, -8]}, "stages[1].channels[1]", ">= 1"),
        ({"stride": 5}, "stages[1].stride", "allowed: 1, 2"),
        ({"depth": "3"}, "stages[1].depth", "expected an integer"),
    ],
)
def test_bad_space_file(tmp_path: Path, change: dict, field: str, allowed: str) -> None:
    import yaml

    data = get_space("tiny").to_dict()
    data["stages"][1].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    _assert_one_line_error(run_cli("space", "show", str(path)), str(path), field, allowed)


def test_space_file_missing_field(tmp_path: Path) -> None:
    import yaml

    data = get_space("tiny").to_dict()
    del data["stages"][2]["channels"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    _assert_one_line_error(run_cli("space", "show", str(path)), "stages[2].channels", "missing required field")


def test_unknown_names_and_missing_files() -> None:
    _assert_one_line_error(run_cli("arch", "show", "FBNetV9"), "FBNetV9", "FBNetV2-F1")
    _assert_one_line_error(run_cli("space", "show", "imagenet"), "imagenet", "fbnetv2, cifar, tiny")
    _assert_one_line_error(run_cli("arch", "show", "missing.json"), "missing.json", "no such file")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "hwnas"
    if not script.exists():
        pytest.skip("the hwnas console script is not installed in this environment (pip install -e .)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"hwnas {hwnas.__version__}"


def test_the_export_summary_shows_every_file_name_whole_at_100_columns() -> None:
    from rich.console import Console

    from hwnas.cli.export import export_table
    from hwnas.export.pipeline import Exported

    folder = Path("/a/rather/long/output/folder/for/the/export-of-the-searched-network")
    rows = []
    for fmt, prec in (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8")):
        r = Exported(fmt, prec, folder / f"searched-cifar-wide-latency-0.6452-{prec}.{fmt}", 123_456, 12.3, 1e-6)
        r.top1_agreement, r.accuracy, r.accuracy_fp32, r.measured_ms = 1.0, 0.885, 0.89, 0.1234
        rows.append(r)
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(export_table(rows, "exported r32 ..."))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    for r in rows:
        assert r.path.name in text, r.path.name
    lines = [line for line in text.splitlines() if "searched-cifar-wide" in line]
    assert [("100.0%" in line) for line in lines] == [r.precision == "int8" for r in rows]  # int8 rows only


def test_help_shows_every_options_default() -> None:
    import argparse

    from hwnas.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        text = "".join(parser.format_help().split())  # no spaces: defaults may wrap, even at a hyphen
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub, p in a.choices.items():
                    walk(p, f"{name} {sub}")
            elif a.option_strings and a.default not in (None, False, argparse.SUPPRESS):
                said = a.help is not None and "default" in a.help  # the text gives it in words
                if not said and "".join(f"(default: {a.default})".split()) not in text:
                    missing.append(f"{name} {a.option_strings[0]}")

    walk(build_parser(), "hwnas")
    assert not missing, missing
