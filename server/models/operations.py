"""What users ask of the model list: search a folder, import (a server path, a URL, a Hugging Face repo),
add a model whose files are in place, update or delete an entry.

Each change takes the catalogue's lock, re-reads models.yaml, and commits through the catalogue. Downloads
do their long part outside the lock, into a hidden temporary folder, and take it only to move the result into
place and register it, so a sync never sees half a model."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import msgspec

from server.models import convert, download, probe, scanner, shipped
from server.models.catalogue import ModelCatalogue
from server.models.errors import (
    BadModelRequest,
    ModelExists,
    PathNotAllowed,
    PathNotFound,
    UnsupportedModel,
)
from server.models.paths import PathRules, normpath, usable
from server.models.schema import ImportRequest, ModelConfig, SyncResult


class ModelOperations:
    def __init__(self, catalogue: ModelCatalogue, paths: PathRules) -> None:
        self.catalogue = catalogue
        self.registry = catalogue.registry
        self.paths = paths
        self.root = catalogue.root
        self.models_dir = catalogue.models_dir

    def new_work_dir(self, prefix: str) -> Path:
        """A private folder for a download, conversion or merge in progress (removed at start if a crash left it)."""
        work_dir = self.catalogue.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))

    # -- search ----------------------------------------------------------------------------------------

    async def search(self, search_path: str) -> list[str]:
        return await asyncio.to_thread(self._search, search_path)

    def _search(self, search_path: str) -> list[str]:
        folder = self.paths.absolute_input(search_path, "search_path")
        self.paths.check_allowed(folder, "search_path")
        if not folder.is_dir():
            raise PathNotFound(f"search_path {folder} is not a folder")
        # Symlinks out of the allowed folders are not followed either.
        return scanner.search(folder, self.paths.allowed_folders())

    # -- import ----------------------------------------------------------------------------------------

    async def import_model(self, request: ImportRequest) -> ModelConfig:
        location = request.location.strip()
        if location.lower().startswith(("http://", "https://")):
            return await self._import_download(location, request, is_repo=False)
        path = await asyncio.to_thread(self._local_location, location)
        if path is None:
            return await self._import_download(location, request, is_repo=True)
        async with self.catalogue.lock:
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
                raise PathNotFound(
                    f"{location} does not exist; give an absolute path on the server, an http(s) URL "
                    "or a Hugging Face repo id (owner/name)"
                )
        path = usable(Path(normpath(path)), "location")
        self.paths.check_allowed(path, "location")
        return path

    def _import_path(self, path: Path, prediction_type: str | None, name: str | None = None) -> ModelConfig:
        self.catalogue.reload()
        if not path.exists():
            raise PathNotFound(f"{path} does not exist")
        existing = self.registry.key_for_path(path)
        if existing is not None and existing not in self.registry.ephemeral:
            raise ModelExists(f"{path} is already registered as {existing}")
        hint_base, hint_type = self.catalogue.syncer.hints(str(path))
        try:
            result = probe.probe(path, hint_base=hint_base, hint_type=hint_type, prediction_type=prediction_type)
        except probe.NotAModel as exc:
            raise UnsupportedModel(f"{exc}") from None
        if existing is not None:
            self.registry.remove(existing)  # it was listed with an error; now it reads fine
        wanted = name or (path.name if path.is_dir() else path.stem)
        config = msgspec.convert(
            {
                "model_name": self.registry.unique_name(result.base_model, result.model_type, wanted),
                "base_model": result.base_model,
                "model_type": result.model_type,
                "path": self.registry.stored_path(path),
                "description": None,
                "model_format": result.model_format,
                "variant": result.variant,
                "prediction_type": result.prediction_type,
                "config": result.config,
                "vae": None,
            },
            ModelConfig,
        )
        self.catalogue.commit(put=[config])
        self.catalogue.changed(SyncResult(added=[config.key], removed=[existing] if existing else [], updated=[]))
        return config

    async def _import_download(self, location: str, request: ImportRequest, *, is_repo: bool) -> ModelConfig:
        work = await asyncio.to_thread(self.new_work_dir, "download-")
        try:
            if is_repo:
                fetched = await asyncio.to_thread(download.download_repo, location, work)
            else:
                fetched = await download.download_url(location, work)
            async with self.catalogue.lock:
                return await asyncio.to_thread(self._place_download, fetched, request.prediction_type)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _place_download(self, fetched: Path, prediction_type: str | None) -> ModelConfig:
        self.catalogue.reload()
        try:
            result = probe.probe(fetched, prediction_type=prediction_type)
        except probe.NotAModel as exc:
            raise UnsupportedModel(f"the download is not a model we recognise: {exc}") from None
        folder = self.models_dir / result.base_model / result.model_type
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / fetched.name
        if target.exists():
            raise ModelExists(f"{self.registry.stored_path(target)} already exists; delete it or import it by path")
        convert.place(fetched, target)
        return self._import_path(target, prediction_type)

    # -- add -------------------------------------------------------------------------------------------

    async def add(self, config: ModelConfig) -> ModelConfig:
        async with self.catalogue.lock:
            return await asyncio.to_thread(self._add, config)

    def _add(self, config: ModelConfig) -> ModelConfig:
        self.catalogue.reload()
        if self.registry.is_taken(config.key):
            raise ModelExists(f"{config.key} is already registered")
        path = self._resolve_model_path(config.path)
        existing = self.registry.key_for_path(path)
        if existing is not None:
            raise ModelExists(f"{path} is already registered as {existing}")
        self._check_legacy_config(config)
        config = msgspec.structs.replace(config, path=self.registry.stored_path(path), error=None)
        self.catalogue.commit(put=[config])
        self.catalogue.changed(SyncResult(added=[config.key], removed=[], updated=[]))
        return config

    def _resolve_model_path(self, value: str) -> Path:
        path = usable(Path(self.registry.absolute(value)), "path")
        self.paths.check_allowed(path, "path")
        if not path.exists():
            raise PathNotFound(f"path {value} does not exist")
        return path

    def _check_legacy_config(self, config: ModelConfig) -> None:
        if config.config is None:
            return
        path = self.catalogue.legacy_config_path(config)
        if path is None:
            raise BadModelRequest(
                f"config {config.config!r} is neither a shipped legacy config (see /api/v1/models/ckpt_confs) "
                "nor an existing yaml file",
                loc=["body", "config"],
                msg="unknown legacy config",
            )
        if shipped.legacy_config(config.config) is None:
            self.paths.check_allowed(path, "config")  # the user's own yaml is read when the model loads

    # -- update, delete --------------------------------------------------------------------------------

    async def update(self, key: str, config: ModelConfig) -> ModelConfig:
        async with self.catalogue.lock:
            return await asyncio.to_thread(self._update, key, config)

    def _update(self, key: str, body: ModelConfig) -> ModelConfig:
        self.catalogue.reload()
        current = self.catalogue.existing(key)
        if body.model_type != current.model_type:
            raise BadModelRequest(
                f"model_type cannot change ({current.model_type} -> {body.model_type}); "
                "import the files as a new model instead"
            )
        renamed = body.key != key
        if renamed and self.registry.is_taken(body.key):
            raise ModelExists(f"{body.key} is already registered")
        current_path = Path(self.registry.absolute(current.path))
        path = Path(self.registry.absolute(body.path))
        if path != current_path:
            path = self._resolve_model_path(body.path)
            other = self.registry.key_for_path(path)
            if other is not None and other != key:
                raise ModelExists(f"{path} is already registered as {other}")
        self._check_legacy_config(body)
        if renamed and path == current_path and self.paths.owned(path):
            # A model in our own folder follows its name: models/<base>/<type>/<name>[.ext].
            suffix = "" if path.is_dir() else path.suffix
            target = usable(
                self.models_dir / body.base_model / body.model_type / f"{body.model_name}{suffix}", "model_name"
            )
            if target.exists():
                raise ModelExists(f"{self.registry.stored_path(target)} already exists")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            path = target
        new = msgspec.structs.replace(body, path=self.registry.stored_path(path), error=None)
        if renamed:
            self.registry.rename(key, new)
            self.registry.save()
            result = SyncResult(added=[new.key], removed=[key], updated=[])
        else:
            self.catalogue.commit(put=[new])
            result = SyncResult(added=[], removed=[], updated=[key])
        self.catalogue.forget_fingerprint(current_path)
        self.catalogue.changed(result)
        return new

    async def delete(self, key: str, delete_files: bool) -> None:
        async with self.catalogue.lock:
            await asyncio.to_thread(self._delete, key, delete_files)

    def _delete(self, key: str, delete_files: bool) -> None:
        self.catalogue.reload()
        config = self.catalogue.existing(key)
        path = Path(self.registry.absolute(config.path))
        if delete_files and not self.paths.owned(path):
            raise PathNotAllowed(
                f"{config.path} is outside {self.registry.stored_path(self.models_dir)}/; only files in the models "
                "folder are ever deleted. Delete without delete_files to unregister it"
            )
        if delete_files:
            convert.remove(path)
        self.registry.remove(key)
        self.registry.save()
        self.catalogue.changed(SyncResult(added=[], removed=[key], updated=[]))
