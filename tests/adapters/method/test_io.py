import json
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from adapters import AdapterError, adapter_from_bytes, adapter_to_bytes, load_adapter, save_adapter
from adapters.method.anchor import Adapter
from adapters.method.config import AdapterConfig, Fingerprint

pytestmark = pytest.mark.unit

FP = Fingerprint("clip_vision_model", 32, 8, 32, 17)


def make(anchor=None, **kw) -> Adapter:
    cfg = AdapterConfig(fingerprint=FP, method="guided", sigma=1.25, alpha=0.4, source="guided:x",
                        extra={"grid": "4,4"}, **kw)
    return Adapter(cfg, torch.randn(17, 32) if anchor is None else anchor)


def test_save_load_round_trip_is_exact(tmp_path):
    a = make()
    path = save_adapter(a, tmp_path / "a.safetensors")
    b = load_adapter(path)
    assert torch.equal(a.anchor, b.anchor)
    assert b.config == a.config
    assert b.uid != a.uid  # a loaded file is a new adapter object


def test_file_metadata_names_everything():
    data = adapter_to_bytes(make())
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    assert {"format_version", "method", "sigma", "alpha", "fingerprint", "source"} <= set(meta)
    assert json.loads(meta["fingerprint"])["num_tokens"] == 17
    assert meta["extra.grid"] == "4,4"


@pytest.mark.parametrize("blob, reason", [
    (b"", "not a valid"),
    (b"\x00" * 7, "not a valid"),
    (b"PK\x03\x04 this is a zip/pickle, never unpickled", "not a valid"),
    (st_save({"anchor": torch.zeros(17, 32)}), "metadata lacks"),
    (st_save({"anchor": torch.zeros(17, 32), "x": torch.zeros(1)}, metadata={"a": "b"}), "exactly one tensor"),
    (st_save({"anchor": torch.zeros(17, 32, dtype=torch.int32)}, metadata={"a": "b"}), "2-D float"),
])
def test_bad_files_are_refused_with_a_reason(blob, reason):
    with pytest.raises(AdapterError, match=reason):
        adapter_from_bytes(blob)


def _with_meta(**override) -> bytes:
    meta = {"format_version": "1", "method": "white", "sigma": "1.0", "alpha": "0.5",
            "fingerprint": FP.to_json(), "source": ""}
    meta.update(override)
    return st_save({"anchor": torch.zeros(17, 32)}, metadata=meta)


@pytest.mark.parametrize("override, reason", [
    ({"format_version": "99"}, "format_version"),
    ({"alpha": "1.5"}, "alpha"),
    ({"sigma": "wide"}, "numbers"),
    ({"method": "magic"}, "method"),
    ({"fingerprint": "{"}, "fingerprint"),
    ({"fingerprint": Fingerprint("clip_vision_model", 64, 8, 32, 17).to_json()}, "hidden size"),
])
def test_bad_metadata_is_refused(override, reason):
    with pytest.raises(AdapterError, match=reason):
        adapter_from_bytes(_with_meta(**override))


def test_non_finite_anchor_refused():
    bad = torch.zeros(17, 32)
    bad[0, 0] = float("nan")
    with pytest.raises(AdapterError, match="NaN"):
        adapter_from_bytes(adapter_to_bytes(make(bad)))


def test_missing_file_is_an_adapter_error(tmp_path):
    with pytest.raises(AdapterError, match="cannot read"):
        load_adapter(tmp_path / "nope.safetensors")
