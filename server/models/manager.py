"""`ModelManager`: the model service. It owns the registry, keeps it in agreement with the disk (sync at
start, on every watcher batch, on request), and performs every change users ask for.

Every change happens behind one asyncio lock and starts by re-reading models.yaml, so a hand edit is never
lost to a write from memory; blocking work (disk, probing, torch) runs in threads. Conversions, merges and
downloads do their long part outside the lock, into hidden temporary folders, and take the lock only to
move the result into place and register it, so a sync never sees half a model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from server.http.errors import ApiError, ErrorItem
from server.models import convert, download, merge, probe, scanner, shipped
from server.models.registry import Registry, RegistryError, normpath
from server.models.schema import ImportRequest, MergeRequest, ModelConfig, SyncResult
from server.models.sync import STABLE_S, Syncer, fingerprint
from server.ws.events import ModelsChanged

if TYPE_CHECKING:
    from server.config import Settings
    from server.models.watcher import ModelWatcher
    from server.ws.hub import EventHub

log = logging.getLogger(__name__)


# Longer names fail every file system call with ENAMETOOLONG (Linux NAME_MAX and PATH_MAX).
NAME_MAX = 255
PATH_MAX = 4096


def usable(path: Path, what: str) -> Path:
    """`path` if the operating system can look it up, else 422: a client's name too long for the file system
    is a mistake in the request, not a server failure."""
    raw = os.fsencode(path)
    if len(raw) >= PATH_MAX or any(len(name) > NAME_MAX for name in raw.split(b"/")):
        raise ApiError(
            422, f"{what} is too long for the file system (at most {NAME_MAX} bytes a name, {PATH_MAX - 1} in all)"
        )
    return path


class ModelManager:
    def __init__(self, settings: Settings, events: EventHub | None = None) -> None:
        self.settings = settings
        self.events = events
        self.root = settings.root_path
        self.models_dir = settings.models_dir
        self.registry = Registry(settings.models_yaml, self.root)
        self.syncer = Syncer(self.registry, settings.models_dir, settings.autoimport_dir, self.allowed_folders())
        self.work_dir = settings.models_dir / ".convert-tmp"
        self.cache_dir = settings.models_dir / ".cache"
        self._lock = asyncio.Lock()
        self._load_error: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._followup: asyncio.TimerHandle | None = None
        self._config_dirs: dict[tuple[str, tuple], Path | None] = {}
        self.watcher: ModelWatcher | None = None
        self.loaded = asyncio.Event()
        self.first_sync = asyncio.Event()

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read models.yaml, start watching, then sync, all in the background: the server answers at once, and
        whatever needs the registry waits for `ready()` (which models.yaml alone makes ready)."""
        self._spawn(self._start_in_background())

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

    async def ready(self) -> ModelManager:
        """The manager, once models.yaml has been read."""
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
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

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

    def _spawn(self, coro) -> None:
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

    def get(self, base_model: str, model_type: str, model_name: str) -> ModelConfig:
        """The registered model; KeyError when there is none."""
        return self.registry.entries[f"{base_model}/{model_type}/{model_name}"]

    def list_models(self, base_models: list[str] | None = None, model_type: str | None = None) -> list[ModelConfig]:
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
            stamp: tuple = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = ()
        key = (str(path), stamp)
        if key not in self._config_dirs:
            embedded = diffusers_config_dir(path, self.cache_dir / "embedded-configs") if stamp else None
            self._config_dirs[key] = embedded or shipped.config_dir(config.base_model, self.cache_dir / "configs")
        return self._config_dirs[key]

    def ckpt_confs(self) -> list[str]:
        return shipped.legacy_configs()

    # -- sync ----------------------------------------------------------------------------------------

    async def sync(self) -> SyncResult:
        """Make the registry, models.yaml and the folders agree. ApiError 424 when models.yaml does not parse."""
        await self.loaded.wait()
        async with self._lock:
            try:
                result, deferred = await asyncio.to_thread(self.syncer.run)
            except RegistryError as exc:
                if self._load_error != str(exc):
                    log.error("%s", exc)
                self._load_error = str(exc)
                raise ApiError(424, str(exc)) from None
            self._load_error = None
        self._emit(result)
        if deferred:
            self._sync_later()
        return result

    async def sync_quietly(self) -> None:
        """A sync whose failures are logged, not raised (the watcher's and start-up's)."""
        try:
            await self.sync()
        except ApiError:
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
            self._spawn(self.sync_quietly())

        self._followup = asyncio.get_running_loop().call_later(STABLE_S + 0.1, fire)

    def _emit(self, result: SyncResult) -> None:
        # Thread-safe: the hub hands events emitted from worker threads to the loop.
        if result and self.events is not None:
            self.events.emit(ModelsChanged(added=result.added, removed=result.removed, updated=result.updated))

    def _reload(self) -> None:
        """Pick up hand edits before changing anything (in a thread, under the lock)."""
        try:
            self.registry.load()
        except RegistryError as exc:
            self._load_error = str(exc)
            raise ApiError(424, f"{exc}. Nothing was changed.") from None
        self._load_error = None

    # -- where we may look and write -----------------------------------------------------------------

    def allowed_folders(self) -> list[str] | None:
        """Real paths of the root and the `search_roots` folders, or None when that setting is empty (anywhere)."""
        roots = self.settings.search_roots
        if not roots:
            return None
        return [os.path.realpath(os.path.expanduser(folder)) for folder in [str(self.root), *roots]]

    def check_allowed(self, path: Path, what: str) -> None:
        """403 unless `path` is inside the root or a `search_roots` folder (when that setting is used)."""
        allowed = self.allowed_folders()
        if allowed is None or scanner.inside(os.path.realpath(path), allowed):
            return
        roots = self.settings.search_roots
        raise ApiError(
            403, f"{what} {path} is outside the folders this server may use (search_roots: {', '.join(roots)})"
        )

    def _absolute_input(self, value: str, what: str) -> Path:
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            raise ApiError(422, f"{what} must be an absolute path on the server, not {value!r}")
        return usable(Path(normpath(path)), what)

    def _existing_dir(self, value: str | None, default: Path, what: str) -> Path:
        if value is None:
            default.mkdir(parents=True, exist_ok=True)
            return default
        folder = self._absolute_input(value, what)
        self.check_allowed(folder, what)
        if not folder.is_dir():
            raise ApiError(404, f"{what} {folder} is not a folder")
        return folder

    # -- search, import, add ---------------------------------------------------------------------------

    async def search(self, search_path: str) -> list[str]:
        return await asyncio.to_thread(self._search, search_path)

    def _search(self, search_path: str) -> list[str]:
        folder = self._absolute_input(search_path, "search_path")
        self.check_allowed(folder, "search_path")
        if not folder.is_dir():
            raise ApiError(404, f"search_path {folder} is not a folder")
        # Symlinks out of the allowed folders are not followed either.
        return scanner.search(folder, self.allowed_folders())

    async def import_model(self, request: ImportRequest) -> ModelConfig:
        location = request.location.strip()
        if location.lower().startswith(("http://", "https://")):
            return await self._import_download(location, request, is_repo=False)
        path = await asyncio.to_thread(self._local_location, location)
        if path is None:
            return await self._import_download(location, request, is_repo=True)
        async with self._lock:
            return await asyncio.to_thread(self._import_path, path, request.prediction_type)

    def _local_location(self, location: str) -> Path | None:
        """The server path `location` names, or None for a Hugging Face repo id."""
        path = Path(os.path.expanduser(location))
        if not path.is_absolute():
            if usable(self.root / location, "location").exists():
                path = self.root / location
            elif download.REPO_ID.fullmatch(location):
                return None
            else:
                raise ApiError(
                    404,
                    f"{location} does not exist; give an absolute path on the server, an http(s) URL "
                    "or a Hugging Face repo id (owner/name)",
                )
        path = usable(Path(normpath(path)), "location")
        self.check_allowed(path, "location")
        return path

    def _import_path(self, path: Path, prediction_type: str | None, name: str | None = None) -> ModelConfig:
        self._reload()
        if not path.exists():
            raise ApiError(404, f"{path} does not exist")
        existing = self.registry.key_for_path(path)
        if existing is not None and existing not in self.registry.ephemeral:
            raise ApiError(409, f"{path} is already registered as {existing}")
        hint_base, hint_type = self.syncer.hints(str(path))
        try:
            result = probe.probe(path, hint_base=hint_base, hint_type=hint_type, prediction_type=prediction_type)
        except probe.NotAModel as exc:
            raise ApiError(415, f"{exc}") from None
        if existing is not None:
            self.registry.remove(existing)  # it was listed with an error; now it reads fine
        wanted = name or (path.name if path.is_dir() else path.stem)
        config = ModelConfig(
            model_name=self.registry.unique_name(result.base_model, result.model_type, wanted),
            base_model=result.base_model,  # type: ignore[arg-type]
            model_type=result.model_type,  # type: ignore[arg-type]
            path=self.registry.stored_path(path),
            description=None,
            model_format=result.model_format,  # type: ignore[arg-type]
            variant=result.variant,  # type: ignore[arg-type]
            prediction_type=result.prediction_type,  # type: ignore[arg-type]
            config=result.config,
            vae=None,
        )
        self._commit(put=[config])
        self._emit(SyncResult(added=[config.key], removed=[existing] if existing else [], updated=[]))
        return config

    async def _import_download(self, location: str, request: ImportRequest, *, is_repo: bool) -> ModelConfig:
        work = await asyncio.to_thread(self._new_work_dir, "download-")
        try:
            try:
                if is_repo:
                    fetched = await asyncio.to_thread(download.download_repo, location, work)
                else:
                    fetched = await download.download_url(location, work)
            except download.DownloadError as exc:
                raise ApiError(exc.status, exc.detail) from None
            async with self._lock:
                return await asyncio.to_thread(self._place_download, fetched, request.prediction_type)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _place_download(self, fetched: Path, prediction_type: str | None) -> ModelConfig:
        self._reload()
        try:
            result = probe.probe(fetched, prediction_type=prediction_type)
        except probe.NotAModel as exc:
            raise ApiError(415, f"the download is not a model we recognise: {exc}") from None
        folder = self.models_dir / result.base_model / result.model_type
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / fetched.name
        if target.exists():
            raise ApiError(409, f"{self.registry.stored_path(target)} already exists; delete it or import it by path")
        convert.place(fetched, target)
        return self._import_path(target, prediction_type)

    async def add(self, config: ModelConfig) -> ModelConfig:
        async with self._lock:
            return await asyncio.to_thread(self._add, config)

    def _add(self, config: ModelConfig) -> ModelConfig:
        self._reload()
        if self.registry.is_taken(config.key):
            raise ApiError(409, f"{config.key} is already registered")
        path = self._resolve_model_path(config.path)
        existing = self.registry.key_for_path(path)
        if existing is not None:
            raise ApiError(409, f"{path} is already registered as {existing}")
        self._check_legacy_config(config)
        config = msgspec.structs.replace(config, path=self.registry.stored_path(path), error=None)
        self._commit(put=[config])
        self._emit(SyncResult(added=[config.key], removed=[], updated=[]))
        return config

    def _resolve_model_path(self, value: str) -> Path:
        path = usable(Path(self.registry.absolute(value)), "path")
        self.check_allowed(path, "path")
        if not path.exists():
            raise ApiError(404, f"path {value} does not exist")
        return path

    def _check_legacy_config(self, config: ModelConfig) -> None:
        if config.config is None:
            return
        path = self.legacy_config_path(config)
        if path is None:
            raise ApiError(
                422,
                f"config {config.config!r} is neither a shipped legacy config (see /api/v1/models/ckpt_confs) "
                "nor an existing yaml file",
                [ErrorItem(loc=["body", "config"], msg="unknown legacy config")],
            )
        if shipped.legacy_config(config.config) is None:
            self.check_allowed(path, "config")  # the user's own yaml is read when the model loads

    # -- update, delete ------------------------------------------------------------------------------

    async def update(self, key: str, config: ModelConfig) -> ModelConfig:
        async with self._lock:
            return await asyncio.to_thread(self._update, key, config)

    def _update(self, key: str, body: ModelConfig) -> ModelConfig:
        self._reload()
        current = self._existing(key)
        if body.model_type != current.model_type:
            raise ApiError(
                422,
                f"model_type cannot change ({current.model_type} -> {body.model_type}); import the files as a new model instead",
            )
        renamed = body.key != key
        if renamed and self.registry.is_taken(body.key):
            raise ApiError(409, f"{body.key} is already registered")
        current_path = Path(self.registry.absolute(current.path))
        path = Path(self.registry.absolute(body.path))
        if path != current_path:
            path = self._resolve_model_path(body.path)
            other = self.registry.key_for_path(path)
            if other is not None and other != key:
                raise ApiError(409, f"{path} is already registered as {other}")
        self._check_legacy_config(body)
        if renamed and path == current_path and self._inside(path, self.models_dir):
            # A model in our own folder follows its name: models/<base>/<type>/<name>[.ext].
            suffix = "" if path.is_dir() else path.suffix
            target = usable(
                self.models_dir / body.base_model / body.model_type / f"{body.model_name}{suffix}", "model_name"
            )
            if target.exists():
                raise ApiError(409, f"{self.registry.stored_path(target)} already exists")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            path = target
        new = msgspec.structs.replace(body, path=self.registry.stored_path(path), error=None)
        if renamed:
            self.registry.rename(key, new)
            self.registry.save()
            result = SyncResult(added=[new.key], removed=[key], updated=[])
        else:
            self._commit(put=[new])
            result = SyncResult(added=[], removed=[], updated=[key])
        self.syncer.fingerprints.pop(str(current_path), None)
        self._emit(result)
        return new

    async def delete(self, key: str, delete_files: bool) -> None:
        async with self._lock:
            await asyncio.to_thread(self._delete, key, delete_files)

    def _delete(self, key: str, delete_files: bool) -> None:
        self._reload()
        config = self._existing(key)
        path = Path(self.registry.absolute(config.path))
        if delete_files and not self._inside(path, self.models_dir):
            raise ApiError(
                403,
                f"{config.path} is outside {self.registry.stored_path(self.models_dir)}/; only files in the models "
                "folder are ever deleted. Delete without delete_files to unregister it",
            )
        if delete_files:
            convert.remove(path)
        self.registry.remove(key)
        self.registry.save()
        self._emit(SyncResult(added=[], removed=[key], updated=[]))

    # -- convert -----------------------------------------------------------------------------------

    async def convert(self, key: str, dest: str | None) -> ModelConfig:
        config, checkpoint, target, config_dir = await asyncio.to_thread(self._plan_convert, key, dest)
        started = time.monotonic()
        try:
            out = await asyncio.to_thread(
                convert.convert_checkpoint, checkpoint, self.legacy_config_path(config), config_dir, self.work_dir
            )
        except Exception as exc:
            log.exception("converting %s failed", key)
            raise ApiError(424, f"converting {key} failed: {exc}") from None
        try:
            async with self._lock:
                return await asyncio.to_thread(self._finish_convert, key, config, out, target, started)
        finally:
            await asyncio.to_thread(shutil.rmtree, out.parent, True)

    def _plan_convert(self, key: str, dest: str | None) -> tuple[ModelConfig, Path, Path, Path]:
        config = self._existing(key)
        if config.model_format != "checkpoint" or config.model_type != "main":
            raise ApiError(
                400, f"{key} is a {config.model_format} {config.model_type} model; only main checkpoints convert"
            )
        default = self.models_dir / config.base_model / config.model_type
        folder = self._existing_dir(dest, default, "convert_dest_directory")
        target = usable(folder / config.model_name, "model_name")
        if target.exists():
            raise ApiError(409, f"{target} already exists")
        try:
            config_dir = self.diffusers_config_dir(config)
        except Exception as exc:
            raise ApiError(424, f"{key} cannot be read: {exc}") from None
        if config_dir is None:
            raise ApiError(
                424, f"the server has no diffusers config for {config.base_model}, so {key} cannot be converted offline"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return config, self.absolute_path(config), target, config_dir

    def _finish_convert(self, key: str, before: ModelConfig, out: Path, target: Path, started: float) -> ModelConfig:
        self._reload()
        config = self._existing(key)
        if config.path != before.path:
            raise ApiError(409, f"{key} changed while it was being converted; nothing was changed")
        if target.exists():
            raise ApiError(409, f"{target} already exists")
        convert.place(out, target)
        new = msgspec.structs.replace(
            config, path=self.registry.stored_path(target), model_format="diffusers", config=None, error=None
        )
        checkpoint = self.absolute_path(config)
        self._commit(put=[new])
        if self._inside(checkpoint, self.models_dir):
            convert.remove(checkpoint)
        log.info("converted %s to %s in %.1f s", key, target, time.monotonic() - started)
        self._emit(SyncResult(added=[], removed=[], updated=[key]))
        return new

    # -- merge -------------------------------------------------------------------------------------

    async def merge(self, base_model: str, request: MergeRequest) -> ModelConfig:
        merged, paths, target, work = await asyncio.to_thread(self._plan_merge, base_model, request)
        names = request.model_names
        out = work / target.name
        kwargs = {"alpha": request.alpha, "interp": request.interp, "force": request.force}
        try:
            try:
                if merged.model_format == "checkpoint":
                    await asyncio.to_thread(merge.merge_checkpoints, paths, names, out, **kwargs)
                else:
                    await asyncio.to_thread(merge.merge_diffusers, paths, names, out, **kwargs)
            except merge.MergeError as exc:
                raise ApiError(400, str(exc)) from None
            except Exception as exc:
                log.exception("merging %s failed", names)
                raise ApiError(424, f"merging failed: {exc}") from None
            async with self._lock:
                return await asyncio.to_thread(self._finish_merge, merged, out, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _plan_merge(self, base_model: str, request: MergeRequest) -> tuple[ModelConfig, list[Path], Path, Path]:
        """Check everything that can be checked before writing: names, formats, shapes, destination."""
        names = request.model_names
        if len(names) == 3 and request.interp != "add_difference":
            raise ApiError(422, "three models merge only with interp add_difference")
        if request.interp == "add_difference" and len(names) != 3:
            raise ApiError(422, "add_difference needs three models: A + (B - C) * alpha")
        if len(set(names)) != len(names):
            raise ApiError(422, "model_names must name different models")
        configs = [self._existing(f"{base_model}/main/{name}") for name in names]
        formats = {c.model_format for c in configs}
        paths = [self.absolute_path(c) for c in configs]
        is_checkpoint = formats == {"checkpoint"}
        if is_checkpoint and not all(p.name.lower().endswith(".safetensors") for p in paths):
            raise ApiError(400, "checkpoints merge only as .safetensors; convert the others first")
        if not is_checkpoint and formats != {"diffusers"}:
            raise ApiError(400, "models to merge must all be diffusers folders or all .safetensors checkpoints")
        name = request.merged_model_name or "+".join(names)
        key = f"{base_model}/main/{name}"
        if self.registry.is_taken(key):
            raise ApiError(409, f"{key} is already registered")
        default = self.models_dir / base_model / "main"
        folder = self._existing_dir(request.merge_dest_directory, default, "merge_dest_directory")
        target = usable(folder / (f"{name}.safetensors" if is_checkpoint else name), "merged_model_name")
        if target.exists():
            raise ApiError(409, f"{target} already exists")
        try:
            if is_checkpoint:
                merge.check_checkpoints(paths, names, request.force)
            else:
                merge.check_diffusers(paths, names, request.force)
        except merge.MergeError as exc:
            raise ApiError(400, str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ApiError(424, f"the models to merge cannot be read: {exc}") from None
        first = configs[0]
        merged = ModelConfig(
            model_name=name,
            base_model=first.base_model,
            model_type="main",
            path="",
            description=f"{request.interp} of {', '.join(names)} (alpha {request.alpha:g})",
            model_format=first.model_format,
            variant=first.variant,
            prediction_type=first.prediction_type,
            config=first.config if is_checkpoint else None,
            vae=first.vae,
        )
        return merged, paths, target, self._new_work_dir("merge-")

    def _finish_merge(self, merged: ModelConfig, out: Path, target: Path) -> ModelConfig:
        self._reload()
        if self.registry.is_taken(merged.key):
            raise ApiError(409, f"{merged.key} is already registered")
        if target.exists():
            raise ApiError(409, f"{target} already exists")
        convert.place(out, target)
        merged = msgspec.structs.replace(merged, path=self.registry.stored_path(target))
        self._commit(put=[merged])
        self._emit(SyncResult(added=[merged.key], removed=[], updated=[]))
        return merged

    # -- helpers -------------------------------------------------------------------------------------

    def _new_work_dir(self, prefix: str) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))

    def _existing(self, key: str) -> ModelConfig:
        config = self.registry.get(key)
        if config is None:
            raise ApiError(404, f"model {key} not found")
        return config

    @staticmethod
    def _inside(path: Path, folder: Path) -> bool:
        path_s, folder_s = normpath(path), normpath(folder)
        return path_s.startswith(folder_s + os.sep)

    def _commit(self, put: list[ModelConfig]) -> None:
        """Register and write models.yaml; the path's current state is what the next sync compares to."""
        for config in put:
            self.registry.put(config)
            path = self.registry.absolute(config.path)
            fp = fingerprint(path)
            if fp is not None:
                self.syncer.fingerprints[path] = fp
        self.registry.save()
