"""Finding 9: start-up and help -- flags documented with defaults, hints that name real flags, the port
checked before any model loads, `radapt adapter build` flags checked before the model loads."""

from __future__ import annotations

import argparse
import socket
import time

import pytest

from service.cli import build_parser, main

pytestmark = pytest.mark.unit


def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_every_serve_flag_has_help_and_shows_its_default():
    parser = serve_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
    text = parser.format_help()
    for needle in ["(default: 32)", "(default: 8000)", "(default: 127.0.0.1)", "(default: auto)",
                   "(default: 30.0)", "(default: builtin:tiny-clip)", "(default: 1024)", "(default: 2)"]:
        assert needle in text, needle


def test_settings_errors_name_only_flags_that_exist(monkeypatch, capsys):
    """`RADAPT_MAX_BODY_BYTES=10` was reported as `--max-body-bytes`, a flag `radapt serve` does not have."""
    monkeypatch.setenv("RADAPT_MAX_BODY_BYTES", "10")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "RADAPT_MAX_BODY_BYTES" in err and "--max-body-bytes" not in err
    flags = {s for a in serve_parser()._actions for s in a.option_strings}
    monkeypatch.delenv("RADAPT_MAX_BODY_BYTES")
    assert main(["serve", "--max-batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--max-batch-size" in err and "--max-batch-size" in flags


def test_a_port_in_use_is_found_before_models_load(capsys, monkeypatch):
    import adapters.zoo.loading

    def must_not_load(*args, **kwargs):
        raise AssertionError("models loaded before the port was checked")

    monkeypatch.setattr(adapters.zoo.loading, "load_model", must_not_load)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        start = time.monotonic()
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port), "--model", "builtin:tiny-clip"]) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "--port" in err


@pytest.mark.parametrize("flags, needle", [
    (["--alpha", "1.5"], "--alpha"),
    (["--alpha", "-0.1"], "--alpha"),
    (["--sigma", "40"], "--sigma"),
    (["--method", "guided"], "--robust-model"),
    (["--method", "white", "--robust-model", "x"], "only used by --method guided"),
])
def test_adapter_build_checks_flags_before_loading_the_model(flags, needle, tmp_path, capsys, monkeypatch):
    import adapters.zoo.loading

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model loaded before the flags were checked")

    monkeypatch.setattr(adapters.zoo.loading, "load_model", must_not_load)
    out = tmp_path / "a.safetensors"
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--out", str(out), *flags]) == 2
    assert needle in capsys.readouterr().err and not out.exists()


@pytest.mark.integration
def test_data_method_on_qwen_says_why(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(images / "a.png")
    assert main(["adapter", "build", "--model", "builtin:tiny-qwen2-vl", "--method", "data", "--images",
                 str(images), "--out", str(tmp_path / "q.safetensors"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "fixed-resolution" in err and "white or guided" in err
