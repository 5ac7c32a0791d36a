"""Fuzzing with schemathesis against the server's own OpenAPI schema: nothing a client sends is a 5xx.

A real ``radapt serve`` (tiny CLIP + tiny LLaVA, an adapter directory) on loopback; every operation
gets ``MAX_EXAMPLES`` generated requests, valid and invalid (derandomized: the same cases each run),
and after each one the server must still answer its health probe.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from bench.server import ServerProcess

pytestmark = pytest.mark.integration
MAX_EXAMPLES = int(os.environ.get("RADAPT_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from adapters import RAdaptModel, save_adapter
    from adapters.method.acquire import white_adapter
    from adapters.zoo.loading import load_model

    work = tmp_path_factory.mktemp("fuzz")
    (work / "adapters").mkdir()
    rmodel = RAdaptModel.from_loaded(load_model("builtin:tiny-clip", device="cpu", dtype="float32"))
    save_adapter(white_adapter(rmodel, 0.5, 0.25), work / "adapters" / "a.safetensors")
    cmd = [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "serve", "--port", "{port}",
           "--device", "cpu", "--dtype", "float32", "--model", "builtin:tiny-clip", "--model", "builtin:tiny-llava",
           "--adapter-dir", str(work / "adapters"), "--request-timeout-s", "10", "--playground"]
    env = {"RADAPT_MAX_NEW_TOKENS": "4", "RADAPT_MAX_NEW_TOKENS_LIMIT": "8", "RADAPT_MAX_LABELS": "16",
           "RADAPT_MAX_INPUTS": "8", "RADAPT_ATTACKS_PER_MINUTE": "6000", "RADAPT_ATTACK_MAX_STEPS": "4"}
    with ServerProcess("fuzz", cmd, "/health/ready", Path(work) / "server.log", env=env) as server:
        yield server.url


def operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_5xx_and_the_server_serves_on(fuzz_server, mode):
    seen: list[str] = []
    for op in operations(fuzz_server):
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        def call(case) -> None:
            response = case.call(base_url=fuzz_server, timeout=30)
            seen.append(f"{case.method} {case.path} {response.status_code}")
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:500], case.body if case.body is not None else "")
            if response.status_code >= 400:  # every error in the one JSON shape
                assert set(response.json()["error"]) == {"message", "type", "code"}, response.text[:300]
            assert httpx.get(fuzz_server + "/health/live", timeout=10).status_code == 200

        try:
            call()
        except Unsatisfiable:  # nothing invalid to send (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE
    assert len(seen) >= MAX_EXAMPLES  # the fuzzing ran
    assert any(" 4" in s for s in seen) or mode is GenerationMode.POSITIVE
