"""The model catalogue: the registry (`models.yaml`) kept in agreement with the folders that are its truth.

It reads models.yaml at start, watches the autoimport folders, the models folder and models.yaml, and syncs:
at start, on every watcher batch, and on request. It answers every lookup (loader, routes, validation) and
is the one place the registry is written: `commit` registers and saves, `changed` announces.

Every change happens behind one asyncio lock and starts by re-reading models.yaml (`reload`), so a hand
edit is never lost to a write from memory; blocking work runs in threads."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.events import Emit, ModelsChanged
from server.models import convert, shipped
from server.models.errors import ModelNotFound, ModelsUnavailable
from server.models.registry import Registry, RegistryError
from server.models.schema import ModelConfig, SyncResult
from server.models.sync import STABLE_S, Syncer, fingerprint
from server.tasks import stop_tasks

if TYPE_CHECKING:
    from server.config import Settings
    from server.models.watcher import ModelWatcher

log = logging.getLogger(__name__)


class ModelCatalogue:
    def __init__(self, settings: Settings, emit: Emit, allowed_folders: list[str] | None) -> None:
        self.settings = settings
        self.emit = emit
        self.root = settings.root_path
        self.models_dir = settings.models_dir
        self.registry = Registry(settings.models_yaml, self.root)
        self.syncer = Syncer(self.registry, settings.models_dir, settings.autoimport_dir, allowed_folders)
        self.work_dir = settings.models_dir / ".convert-tmp"
        self.cache_dir = settings.models_dir / ".cache"
        # Held by every change to the registry (sync, import, add, update, delete, the end of a convert/merge).
        self.lock = asyncio.Lock()
        self._load_error: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._followup: asyncio.TimerHandle | None = None
        self._config_dirs: dict[tuple[str, tuple[int, ...]], Path | None] = {}
        self.watcher: ModelWatcher | None = None
        self.loaded = asyncio.Event()
        self.first_sync = asyncio.Event()
        self._yaml_seen: tuple[int, int] | None = None

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read models.yaml, start watching, then sync, all in the background: the server answers at once, and
        whatever needs the registry waits for `ready()` (which models.yaml alone makes ready)."""
        self.spawn(self._start_in_background())

    async def start_reading(self) -> None:
        """Read models.yaml and nothing more: how an `imagegraph worker` uses the catalogue. The servers sync the
        folders and write models.yaml; a worker re-reads it before each session it claims."""
        try:
            await asyncio.to_thread(self.registry.load)
        except RegistryError as exc:
            self._load_error = str(exc)
            log.error("%s", exc)
        finally:
            self.loaded.set()
            self.first_sync.set()

    async def _start_in_background(self) -> None:
        try:
            await asyncio.to_thread(self._load_or_create)
        except RegistryError as exc:
            self._load_error = str(exc)
            log.error("%s", exc)
        finally:
            self.loaded.set()
        if self.settings.watch:
            from server.models.watcher import ModelWatcher

            self.watcher = ModelWatcher(
                [self.settings.autoimport_dir, self.models_dir], self.settings.models_yaml, self.sync_quietly
            )
            self.watcher.start()
        await self._initial_sync()

    async def ready(self) -> ModelCatalogue:
        """The catalogue, once models.yaml has been read."""
        await self.loaded.wait()
        return self

    def _load_or_create(self) -> None:
        self._remove_stale_yaml_copies()
        self.registry.load()
        if not self.registry.yaml_path.exists():
            self.registry.save()  # an empty registry, where users expect to find (and edit) it

    async def _initial_sync(self) -> None:
        await asyncio.to_thread(self._clean_work_dir)
        if self.watcher is not None:
            # Watching first, then syncing: a file dropped in between is seen by one or the other.
            await self.watcher.ready.wait()
        await self.sync_quietly()
        self.first_sync.set()
        log.info("models: first sync done")

    async def stop(self) -> None:
        if self._followup is not None:
            self._followup.cancel()
        if self.watcher is not None:
            await self.watcher.stop()
        await stop_tasks(list(self._tasks))

    def _remove_stale_yaml_copies(self) -> None:
        """A crash while models.yaml was being replaced leaves the new copy (`.models.yaml.<pid>.tmp`, see
        server/fileio.py) beside it; models.yaml itself is whole, old or new, so the copy is only clutter. Before
        our first write, every such copy is someone else's: one server per root."""
        yaml_path = self.registry.yaml_path
        for stale in yaml_path.parent.glob(f".{yaml_path.name}.*.tmp"):
            log.info("removing %s, left by a crash while models.yaml was being written", stale)
            stale.unlink(missing_ok=True)

    def _clean_work_dir(self) -> None:
        """Half-finished conversions, merges and downloads left by a crash: never registered, so just clutter."""
        if self.work_dir.is_dir():
            for entry in self.work_dir.iterdir():
                convert.remove(entry)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def yaml_error(self) -> str | None:
        """Why models.yaml (or some entry of it) could not be read; None when all is well."""
        if self._load_error:
            return self._load_error
        return "; ".join(self.registry.problems) or None

    # -- reading (any thread) ----------------------------------------------------------------------

    def _follow_shared_yaml(self) -> None:
        """On a shared root another server may have changed models.yaml: read it again when its size or mtime
        moved (one stat per read), and announce what changed."""
        if not self.settings.shared_database or not self.loaded.is_set():
            return
        try:
            stat = self.registry.yaml_path.stat()
        except OSError:
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._yaml_seen:
            return
        self._yaml_seen = seen
        try:
            change = self.registry.load()
        except RegistryError as exc:
            self._load_error = str(exc)
            return
        if change is not None and any(change):
            added, removed, updated = change
            self.emit(ModelsChanged(added=added, removed=removed, updated=updated))

    def get(self, base_model: str, model_type: str, model_name: str) -> ModelConfig:
        """The registered model; KeyError when there is none."""
        self._follow_shared_yaml()
        return self.registry.entries[f"{base_model}/{model_type}/{model_name}"]

    def existing(self, key: str) -> ModelConfig:
        """The registered model; ModelNotFound when there is none."""
        self._follow_shared_yaml()
        config = self.registry.get(key)
        if config is None:
            raise ModelNotFound(f"model {key} not found")
        return config

    def list_models(self, base_models: Sequence[str] | None = None, model_type: str | None = None) -> list[ModelConfig]:
        self._follow_shared_yaml()
        configs = list(self.registry.entries.values())
        return sorted(
            (
                c
                for c in configs
                if (not base_models or c.base_model in base_models)
                and (model_type is None or c.model_type == model_type)
            ),
            key=lambda c: c.key,
        )

    def version(self, key: str) -> str:
        """What changes when a registered model's files do (or when it is unregistered): part of the key under
        which node outputs computed with it are cached."""
        config = self.registry.get(key)
        if config is None:
            return "unregistered"
        return f"{config.path}:{fingerprint(str(self.absolute_path(config)))}"

    def absolute_path(self, config: ModelConfig) -> Path:
        return Path(self.registry.absolute(config.path))

    def legacy_config_path(self, config: ModelConfig) -> Path | None:
        """The checkpoint's legacy yaml as an absolute path: a shipped one (`stable-diffusion/...`), or the
        user's own, absolute or relative to the root's configs folder or the root."""
        if not config.config:
            return None
        shipped_path = shipped.legacy_config(config.config)
        if shipped_path is not None:
            return shipped_path
        name = os.path.expanduser(config.config)
        for candidate in (Path(name), self.settings.configs_dir / name, self.root / name):
            try:
                if candidate.is_absolute() and candidate.is_file():
                    return candidate
            except OSError:  # e.g. a name too long for the file system: no file we could read
                continue
        return None

    def diffusers_config_dir(self, config: ModelConfig) -> Path | None:
        """A local diffusers config folder to load a checkpoint offline: the checkpoint's own embedded
        configs (the tiny model has them), else the one the server ships for its base."""
        if config.model_format != "checkpoint" or config.model_type != "main":
            return None
        from server.models.single_file import diffusers_config_dir

        path = self.absolute_path(config)
        try:
            st = path.stat()
            stamp: tuple[int, ...] = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = ()
        key = (str(path), stamp)
        if key not in self._config_dirs:
            embedded = diffusers_config_dir(path, self.cache_dir / "embedded-configs") if stamp else None
            self._config_dirs[key] = embedded or shipped.config_dir(config.base_model, self.cache_dir / "configs")
        return self._config_dirs[key]

    def pipeline_config(self, config: ModelConfig) -> dict[str, Any]:
        """A main model's `model_index.json` (for a checkpoint, that of its config folder); {} when unreadable."""
        import json

        folder = self.absolute_path(config) if config.model_format == "diffusers" else self.diffusers_config_dir(config)
        try:
            data = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8")) if folder else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def embedding_widths(self, config: ModelConfig) -> dict[str, int]:
        """part -> width of a registered embedding's vectors, read from its header (nothing is loaded)."""
        from server.models import embeddings, state_dict_shapes
        from server.models.probe_result import NotAModel

        path = self.absolute_path(config)
        if path.is_dir():
            path = next(
                (path / n for n in ("learned_embeds.safetensors", "learned_embeds.bin") if (path / n).is_file()), path
            )
        try:
            return embeddings.widths(state_dict_shapes.tensor_shapes(path))
        except (NotAModel, OSError):
            return {}

    def text_encoder_width(self, config: ModelConfig, part: str = "text_encoder") -> int | None:
        """The hidden width of a main model's text encoder, from its config (nothing is loaded)."""
        import json

        folder = self.absolute_path(config) if config.model_format == "diffusers" else self.diffusers_config_dir(config)
        try:
            data = json.loads((Path(folder) / part / "config.json").read_text(encoding="utf-8")) if folder else {}
        except (OSError, ValueError):
            return None
        width = data.get("hidden_size") if isinstance(data, dict) else None
        return width if isinstance(width, int) else None

    def shipped_config_dir(self, base: str) -> Path | None:
        """The diffusers configs the server ships for `base` (components of checkpoints read on their own)."""
        return shipped.config_dir(base, self.cache_dir / "configs")

    def ckpt_confs(self) -> list[str]:
        return shipped.legacy_configs()

    # -- sync ----------------------------------------------------------------------------------------

    async def sync(self) -> SyncResult:
        """Make the registry, models.yaml and the folders agree. ModelsUnavailable when models.yaml does not
        parse."""
        await self.loaded.wait()
        async with self.lock:
            try:
                result, deferred = await asyncio.to_thread(self.syncer.run)
            except RegistryError as exc:
                if self._load_error != str(exc):
                    log.error("%s", exc)
                self._load_error = str(exc)
                raise ModelsUnavailable(str(exc)) from None
            self._load_error = None
        self.changed(result)
        if deferred:
            self._sync_later()
        return result

    async def sync_quietly(self) -> None:
        """A sync whose failures are logged, not raised (the watcher's and start-up's)."""
        try:
            await self.sync()
        except ModelsUnavailable:
            pass  # models.yaml does not parse: already logged, and reported in /app/config
        except Exception:
            log.exception("model sync failed")

    def _sync_later(self) -> None:
        """Some file was still being written: look again once it may have settled (watching only; without
        the watcher, syncs happen when someone asks)."""
        if not self.settings.watch or self._followup is not None:
            return

        def fire() -> None:
            self._followup = None
            self.spawn(self.sync_quietly())

        self._followup = asyncio.get_running_loop().call_later(STABLE_S + 0.1, fire)

    # -- changing (under the lock, in a thread) --------------------------------------------------------

    def changed(self, result: SyncResult) -> None:
        """Announce what a change did (any thread: the emit callable hands events to the loop)."""
        if result:
            self.emit(ModelsChanged(added=result.added, removed=result.removed, updated=result.updated))

    def reload(self) -> None:
        """Pick up hand edits before changing anything."""
        try:
            self.registry.load()
        except RegistryError as exc:
            self._load_error = str(exc)
            raise ModelsUnavailable(f"{exc}. Nothing was changed.") from None
        self._load_error = None

    def commit(self, put: list[ModelConfig]) -> None:
        """Register and write models.yaml; the path's current state is what the next sync compares to."""
        for config in put:
            self.registry.put(config)
            path = self.registry.absolute(config.path)
            fp = fingerprint(path)
            if fp is not None:
                self.syncer.fingerprints[path] = fp
        self.registry.save()

    def forget_fingerprint(self, path: Path) -> None:
        self.syncer.fingerprints.pop(str(path), None)
