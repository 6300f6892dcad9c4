"""Settings: one msgspec Struct, filled from defaults < `<root>/configs/imagegraph.yaml` < `IMAGEGRAPH_*`
environment variables < command-line flags. A bad value raises `SettingsError` naming the key and its source."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]

ENV_PREFIX = "IMAGEGRAPH_"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTOIMPORT_KINDS = ("main", "lora", "embedding", "controlnet", "vae", "upscale")
# IMAGEGRAPH_* variables read by the client commands (`imagegraph generate`), not settings of the server.
CLIENT_ENV = frozenset({"server"})


class SettingsError(Exception):
    """A setting that cannot be used; the message is one line naming the key."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    root: str = "~/imagegraph"
    host: str = "127.0.0.1"
    port: Port = 9090
    token: str | None = None
    # Extra names accepted in the Host header (DNS-rebinding guard); "*" accepts any.
    allowed_hosts: list[str] = []
    # Extra browser origins allowed for WebSocket handshakes and state-changing requests.
    allowed_origins: list[str] = []
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # GiB of loaded model weights kept in RAM (least recently used leave first); 0 keeps only what runs.
    ram_cache_gb: NonNegativeFloat = 6.0
    # The older name of the same limit, in bytes; when set it wins over ram_cache_gb.
    model_cache_bytes: NonNegativeInt | None = None
    # GiB of cached weights kept on the GPU; the rest wait in RAM and move back when used, without a read
    # from disk. None: what the card has, less room for the activations. Ignored on the CPU.
    vram_cache_gb: NonNegativeFloat | None = None
    # `sdpa`: PyTorch's scaled-dot-product attention (diffusers' default); `sliced`: a slice at a time, for
    # little memory, slower.
    attention: Literal["sdpa", "sliced"] = "sdpa"
    # Decode (and encode) big images in tiles; `auto` above VAE_TILING_AUTO_PIXELS, where a whole decode would
    # need several GiB for its activations. Tiles change pixels slightly, so smaller images stay whole.
    vae_tiling: Literal["auto", "on", "off"] = "auto"
    # `model`: every model waits in RAM and only what the running node uses sits on the GPU (diffusers'
    # enable_model_cpu_offload), for 4–8 GB cards. `sequential`: weights stay in RAM and stream to the GPU a
    # layer at a time while a part runs (enable_sequential_cpu_offload), for 4–6 GB cards; much slower.
    offload: Literal["none", "model", "sequential"] = "none"
    # `unet`: torch.compile the UNet; the first run at a size compiles (slow), later runs at it are faster.
    compile: Literal["off", "unet"] = "off"
    # Keep the UNet's activations in channels-last memory order (faster convolutions on recent GPUs).
    channels_last: bool = False
    # Node outputs kept for reuse across sessions (LRU, entries).
    node_cache_entries: NonNegativeInt = 256
    # Hot image and thumbnail files served from memory (bytes).
    image_cache_bytes: NonNegativeInt = 256 * 1024**2
    upload_max_bytes: PositiveInt = 50 * 1024**2
    ws_replay_events: Annotated[int, msgspec.Meta(ge=10_000)] = 10_000
    ws_client_queue: Annotated[int, msgspec.Meta(ge=16)] = 1_000
    # Seconds between WebSocket keep-alive pings; a peer that does not answer within as long is disconnected.
    ws_heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    preview_interval_ms: NonNegativeInt = 200
    # Where /models/search and imports by path may look; empty means anywhere on this machine.
    search_roots: list[str] = []
    watch: bool = True
    # Where records, the queue and events live: empty for SQLite in the root (one server), or a
    # postgresql://user@host:port/db URL that several servers and `imagegraph worker`s share (docs/api.md §Workers).
    database: Annotated[str, msgspec.Meta(pattern=r"^(|postgres(ql)?://.+)$")] = ""
    # False (`serve --no-worker`): this server queues sessions and serves the API, and workers run them.
    run_sessions: bool = True
    # This process's name in GET /api/v1/workers; empty: host name and process id.
    worker_name: str = ""
    # Seconds a worker's hold on its running session lasts unless renewed; a worker silent for longer is `lost`
    # and its session goes back to the queue.
    lease_s: Annotated[float, msgspec.Meta(ge=1)] = 30.0
    # Tries of one session (each lost lease is one) before it is `failed`.
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3

    @property
    def ram_cache_bytes(self) -> int:
        if self.model_cache_bytes is not None:
            return self.model_cache_bytes
        return int(self.ram_cache_gb * 1024**3)

    @property
    def shared_database(self) -> bool:
        """True when the database is PostgreSQL, shared with other servers and workers."""
        return bool(self.database)

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    @property
    def configs_dir(self) -> Path:
        return self.root_path / "configs"

    @property
    def settings_file(self) -> Path:
        return self.configs_dir / "imagegraph.yaml"

    @property
    def models_yaml(self) -> Path:
        return self.configs_dir / "models.yaml"

    @property
    def db_path(self) -> Path:
        return self.root_path / "databases" / "imagegraph.db"

    @property
    def models_dir(self) -> Path:
        return self.root_path / "models"

    @property
    def autoimport_dir(self) -> Path:
        return self.root_path / "autoimport"

    @property
    def images_dir(self) -> Path:
        return self.root_path / "outputs" / "images"

    @property
    def thumbnails_dir(self) -> Path:
        return self.root_path / "outputs" / "thumbnails"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def layout(self) -> list[Path]:
        """Every folder the root must hold."""
        folders = [
            self.configs_dir,
            self.db_path.parent,
            self.models_dir,
            self.models_dir / ".convert-tmp",
            self.images_dir,
            self.thumbnails_dir,
        ]
        folders += [self.autoimport_dir / kind for kind in AUTOIMPORT_KINDS]
        return folders

    def create_layout(self) -> None:
        for folder in self.layout():
            folder.mkdir(parents=True, exist_ok=True)


_FIELDS = frozenset(Settings.__struct_fields__)
_LIST_FIELDS = frozenset(name for name in _FIELDS if isinstance(getattr(Settings(), name), list))


def _env_value(name: str, raw: str) -> Any:
    if name in _LIST_FIELDS:
        raw = raw.strip()
        if raw.startswith("["):
            try:
                return msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise SettingsError(f"bad setting `{name}` (from {ENV_PREFIX}{name.upper()}): {exc}") from None
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _check(values: Mapping[str, Any], source: str) -> None:
    """Validate one layer alone, so an error names the source that caused it."""
    for key in values:
        if key not in _FIELDS:
            raise SettingsError(f"unknown setting `{key}` (from {source})")
    try:
        msgspec.convert(dict(values), Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        key = message.rsplit("`$.", 1)[-1].rstrip("`").split(".")[0].split("[")[0] if "`$." in message else "?"
        reason = message.split(" - at ")[0]
        raise SettingsError(f"bad setting `{key}` (from {source}): {reason}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    if "root" in data:
        raise SettingsError(f"bad setting `root` (from {path}): the root cannot be set from inside itself")
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge every source, later wins; flags that are None are treated as not given."""
    environ = os.environ if environ is None else environ
    flag_values = {key: value for key, value in (flags or {}).items() if value is not None}
    env_values = {
        key[len(ENV_PREFIX) :].lower(): _env_value(key[len(ENV_PREFIX) :].lower(), value)
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() not in CLIENT_ENV
    }
    _check(env_values, "environment")
    _check(flag_values, "command line")

    root = flag_values.get("root") or env_values.get("root") or Settings().root
    settings_file = Path(str(root)).expanduser() / "configs" / "imagegraph.yaml"
    file_values = _read_yaml(settings_file) if settings_file.is_file() else {}
    _check(file_values, str(settings_file))

    merged = {**file_values, **env_values, **flag_values}
    settings = msgspec.convert(merged, Settings, strict=False)
    if not settings.is_loopback and not settings.token:
        raise SettingsError(
            f"bad setting `host`: binding {settings.host} exposes the server beyond this machine; "
            "set a token with --token or IMAGEGRAPH_TOKEN"
        )
    return settings
