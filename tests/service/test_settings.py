"""Settings: priority (flags > env > file > defaults), list parsing, validation messages."""

from __future__ import annotations

import json

import pytest

from service.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_env_file_and_flag_priority(tmp_path, monkeypatch):
    assert load_settings().models == ["builtin:tiny-clip"]
    cfg = tmp_path / "radapt.yaml"
    cfg.write_text("port: 7000\nmax_batch_size: 8\nmodels: [builtin:tiny-llava]\ndefault-robust: true\n")
    s = load_settings(config_file=str(cfg))
    assert (s.port, s.max_batch_size, s.models, s.default_robust) == (7000, 8, ["builtin:tiny-llava"], True)
    monkeypatch.setenv("RADAPT_PORT", "9000")
    monkeypatch.setenv("RADAPT_MODELS", "builtin:tiny-clip, builtin:tiny-llava")
    s = load_settings(config_file=str(cfg))
    assert s.port == 9000 and s.models == ["builtin:tiny-clip", "builtin:tiny-llava"] and s.max_batch_size == 8
    assert load_settings(config_file=str(cfg), port=1234).port == 1234
    monkeypatch.setenv("RADAPT_CONFIG_FILE", str(cfg))
    assert load_settings().max_batch_size == 8
    js = tmp_path / "radapt.json"
    js.write_text(json.dumps({"adapters": ["robust=/x/a.safetensors"], "alpha": 0.25}))
    s = load_settings(config_file=str(js))
    assert s.adapters == ["robust=/x/a.safetensors"] and s.alpha == 0.25


def test_empty_variables_mean_unset(monkeypatch):
    monkeypatch.setenv("RADAPT_API_KEY", "")
    monkeypatch.setenv("RADAPT_ADAPTER_DIR", "")
    s = load_settings()
    assert s.api_key is None and s.adapter_dir is None
    monkeypatch.setenv("RADAPT_API_KEY", "k")
    assert load_settings().api_key.get_secret_value() == "k"


@pytest.mark.parametrize("values, needle", [
    ({"max_batch_size": 0}, "--max-batch-size / RADAPT_MAX_BATCH_SIZE"),
    ({"alpha": 1.5}, "alpha"),
    ({"models": []}, "pass --model"),
    ({"adapters": ["noequals"]}, "NAME=FILE"),
    ({"adapters": ["default=x.safetensors"]}, "taken"),
    ({"adapter_dir": "/does/not/exist"}, "create it"),
    ({"dtype": "float8"}, "dtype"),
    ({"max_new_tokens": 100, "max_new_tokens_limit": 10}, "raise the limit"),
    ({"unknown_setting": 1}, "unknown_setting"),
])
def test_invalid_settings_say_the_fix(values, needle):
    with pytest.raises(SettingsError) as err:
        load_settings(**values)
    assert needle in str(err.value)


def test_bad_config_file(tmp_path):
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(config_file=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(config_file=str(bad))
