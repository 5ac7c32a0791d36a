"""Server settings: one pydantic-settings object, built once at start and passed explicitly.

Priority (highest first): explicit values (the ``radapt serve`` flags), ``RADAPT_*`` environment
variables, the config file (YAML or JSON, ``--config`` / ``RADAPT_CONFIG_FILE``), defaults.
List settings accept JSON or comma-separated values in the environment
(``RADAPT_MODELS=builtin:tiny-clip,builtin:tiny-llava``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_TEMPLATE = "a photo of a {}."
FLAGS = {"models": "model", "adapters": "adapter", "config_file": "config"}  # field -> `radapt serve` flag


class SettingsError(ValueError):
    """Settings that cannot start a server; the message lists each problem and its fix."""


class ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the YAML/JSON file named by ``config_file`` (set by a higher-priority source)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # unused: __call__ reads all
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config_file")
        if not path:
            return {}
        return read_config_file(Path(path))


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"config file {path}: cannot read it ({exc.strerror}); check the --config path") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as exc:
        raise SettingsError(f"config file {path}: not valid YAML/JSON ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: the top level must be a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _split(value: Any) -> Any:
    """Comma-separated or JSON list from the environment; lists pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything ``radapt serve`` can be told. Field descriptions double as the reference docs."""

    model_config = SettingsConfigDict(env_prefix="RADAPT_", extra="forbid", validate_default=True)

    config_file: Path | None = Field(None, description="YAML or JSON file with any of these settings")
    # models and R-Adapt
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["builtin:tiny-clip"],
        description="models to serve: hub ids, local folders or builtin: names; the first is the default")
    adapters: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra adapters at start, NAME=FILE (attached to the first model they fit)")
    adapter_dir: Path | None = Field(None, description="folder POST /v1/adapters may load adapter files from")
    adapter_store: str | None = Field(None, description="where replicas share adapters: a directory on a shared "
                                      "volume or an object-store URL (s3://bucket/prefix, needs the [store] extra); "
                                      "POST/DELETE /v1/adapters write through to it")
    adapter_sync_s: float = Field(2.0, ge=0.1, le=3600.0, description="how often each replica reads the adapter "
                                  "store (seconds); other replicas converge within this interval")
    sigma: float | None = Field(None, ge=0.0, le=8.0, description="filter sigma of the default adapter (pixels)")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="anchor weight of the default adapter")
    default_robust: bool = Field(False, description="what a request that does not say `robust` gets")
    allow_weight_mismatch: bool = Field(False, description="load adapters whose weight digest differs from the "
                                        "model's (another checkpoint of the architecture), with a warning")
    device: str = Field("auto", description="auto (CUDA when present), cpu or cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the hardware computes it (CUDA with bf16, CPUs with "
        "AVX512-BF16 or AMX), else float16 on CUDA and float32 on CPU")
    # network
    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    api_key: SecretStr | None = Field(None, description="Bearer key for inference endpoints (none = open)")
    admin_key: SecretStr | None = Field(None, description="Bearer key for adapter management (none = api_key)")
    # batching and admission
    max_batch_size: int = Field(32, ge=1, le=4096, description="most work items in one forward")
    max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long a batch waits to fill")
    max_queue: int = Field(1024, ge=1, description="queued items per model beyond which requests get 429")
    request_timeout_s: float = Field(30.0, gt=0.0, description="per-request deadline (504 after it)")
    preprocess_workers: int = Field(2, ge=1, le=64, description="threads that decode and preprocess images")
    label_cache_size: int = Field(4096, ge=0, description="text embeddings of labels kept (LRU)")
    warmup: bool = Field(True, description="run one batch per task at load before reporting ready")
    # generation (continuous batching)
    max_new_tokens: int = Field(64, ge=1, le=4096, description="default generation length")
    max_new_tokens_limit: int = Field(512, ge=1, le=32768, description="most tokens a request may ask for")
    max_running_requests: int = Field(32, ge=1, le=1024,
                                      description="generations decoding at once per model (rows of one forward)")
    max_batch_tokens: int = Field(65536, ge=64, description="KV-cache tokens the running generations of a model "
                                  "may reserve (prompt + max_tokens each); bounds memory per model")
    torch_threads: int | None = Field(None, ge=1, le=512, description="torch intra-op threads in the server "
                                      "process (default: torch's choice, one per core); 1 leaves the other cores "
                                      "to HTTP and preprocessing, which small models gain from")
    switch_interval_ms: float = Field(0.5, gt=0.0, le=100.0, description="Python's GIL switch interval in the "
                                      "server process: the model thread runs Python between kernels, and a short "
                                      "interval lets HTTP and preprocessing threads in without waiting up to 5 ms")
    shutdown_grace_s: float | None = Field(None, gt=0.0, le=3600.0, description="on SIGTERM, how long in-flight "
                                           "work may finish before it gets 503 (default: request_timeout_s + 5)")
    # input limits
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest request body")
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=64, description="largest encoded image")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest decoded image (width x height)")
    max_image_aspect_ratio: float = Field(50.0, ge=1.0, le=1000.0,
                                          description="longest image side over its shortest")
    max_labels: int = Field(1000, ge=1, description="labels per classify request")
    max_inputs: int = Field(256, ge=1, description="inputs per embeddings request")
    max_text_chars: int = Field(8192, ge=1, description="longest text input or label")
    max_images_per_request: int = Field(8, ge=1, description="images in one chat request")
    # playground and attacks
    playground: bool = Field(False, description="serve the /playground page (standard vs robust predictions, "
                             "attacks crafted on the server)")
    attack_max_eps: int = Field(16, ge=1, le=64, description="largest L-inf budget an attack may ask for, in 1/255")
    attack_max_steps: int = Field(20, ge=1, le=200, description="most PGD steps an attack may ask for; each step is "
                                  "one forward and backward, queued behind serving work")
    attack_share: float = Field(0.25, gt=0.0, le=1.0, description="the most of a model's time attack steps take "
                                "while other requests for it are in flight (steps run back to back when none are)")
    attacks_per_minute: float = Field(12.0, gt=0.0, le=6000.0, description="attacks each client address may start "
                                      "per minute (token bucket, bursts of up to 3)")
    # remote images
    allow_remote_images: bool = Field(False, description="fetch http(s) image URLs (public addresses only)")
    remote_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="whole fetch of a remote image, seconds")
    remote_max_bytes: int = Field(8 * 1024 * 1024, ge=64, description="largest remote image body")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls)

    @field_validator("api_key", "admin_key", "adapter_dir", "adapter_store", "config_file", "sigma", "alpha",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``RADAPT_API_KEY=`` (an empty variable) means no key, not the empty key."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models", "adapters", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("models")
    @classmethod
    def _models_given(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("no model to serve: pass --model NAME (e.g. builtin:tiny-clip)")
        if len(set(value)) != len(value):
            raise ValueError("a model is listed twice; list each model once")
        return value

    @field_validator("adapters")
    @classmethod
    def _adapters_named(cls, value: list[str]) -> list[str]:
        for spec in value:
            name, sep, path = spec.partition("=")
            if not sep or not path or not ADAPTER_NAME.match(name):
                raise ValueError(f"adapter {spec!r} must be NAME=FILE with NAME of letters, digits, '.', '_', '-'")
            if name == "default":
                raise ValueError("the adapter name 'default' is taken by the built-in white adapter; pick another")
        return value

    @field_validator("adapter_dir")
    @classmethod
    def _dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder; create it or fix --adapter-dir")
        return value

    @field_validator("adapter_store")
    @classmethod
    def _store_driver(cls, value: str | None) -> str | None:
        """An object-store URL needs fsspec and the protocol's driver here, not at the first sync."""
        if value is None or "://" not in value or value.startswith("file://"):
            return value
        protocol = value.split("://", 1)[0]
        try:
            from fsspec import get_filesystem_class

            get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"{protocol}:// adapter stores need fsspec and its driver: pip install "
                             f"'radapt-serve[store]' (s3://) or the protocol's fsspec package ({exc})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("max_new_tokens exceeds max_new_tokens_limit; raise the limit or lower the default")
        if self.shutdown_grace_s is None:
            self.shutdown_grace_s = self.request_timeout_s + 5.0
        if self.max_image_bytes > self.max_body_bytes:
            raise ValueError("max_image_bytes exceeds max_body_bytes; an image that large could never arrive")
        return self


def load_settings(**values: Any) -> Settings:
    """Build Settings from explicit values (None = not given), the environment and the config file.

    Raises SettingsError whose message names each bad setting, its flag/variable and the fix.
    The hint names a ``--flag`` only for settings passed in ``values`` (those ``radapt serve`` has
    flags for); the others are set by ``RADAPT_*`` variables or the config file.
    """
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            where = [f"--{FLAGS.get(field, field.replace('_', '-'))}"] if field in values else []
            where += [f"RADAPT_{field.upper()}", f"'{field}' in the config file"]
            hint = f" ({' / '.join(where)})" if err["loc"] else ""
            lines.append(f"{field}{hint}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
