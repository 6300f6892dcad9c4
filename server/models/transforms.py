"""Models made from models: a checkpoint converted to a diffusers folder, two or three models merged.

The long part (torch work, writing gigabytes) runs outside the catalogue's lock, into a hidden temporary
folder; the lock is taken only to move the result into place and register it. Everything that can be checked
before writing (names, formats, shapes, destination) is checked first."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import msgspec

from server.models import convert, merge
from server.models.catalogue import ModelCatalogue
from server.models.errors import (
    BadModelRequest,
    ModelExists,
    ModelsUnavailable,
    NotApplicable,
)
from server.models.operations import ModelOperations
from server.models.paths import PathRules, usable
from server.models.schema import MergeRequest, ModelConfig, SyncResult

log = logging.getLogger(__name__)


class ModelTransforms:
    def __init__(self, catalogue: ModelCatalogue, paths: PathRules, operations: ModelOperations) -> None:
        self.catalogue = catalogue
        self.registry = catalogue.registry
        self.paths = paths
        self.operations = operations
        self.models_dir = catalogue.models_dir

    # -- convert -----------------------------------------------------------------------------------

    async def convert(self, key: str, dest: str | None) -> ModelConfig:
        config, checkpoint, target, config_dir = await asyncio.to_thread(self._plan_convert, key, dest)
        started = time.monotonic()
        try:
            out = await asyncio.to_thread(
                convert.convert_checkpoint,
                checkpoint,
                self.catalogue.legacy_config_path(config),
                config_dir,
                self.catalogue.work_dir,
                config.prediction_type,
            )
        except Exception as exc:
            log.exception("converting %s failed", key)
            raise ModelsUnavailable(f"converting {key} failed: {exc}") from None
        try:
            async with self.catalogue.lock:
                return await asyncio.to_thread(self._finish_convert, key, config, out, target, started)
        finally:
            await asyncio.to_thread(shutil.rmtree, out.parent, True)

    def _plan_convert(self, key: str, dest: str | None) -> tuple[ModelConfig, Path, Path, Path]:
        config = self.catalogue.existing(key)
        if config.model_format != "checkpoint" or config.model_type != "main":
            raise NotApplicable(
                f"{key} is a {config.model_format} {config.model_type} model; only main checkpoints convert"
            )
        default = self.models_dir / config.base_model / config.model_type
        folder = self.paths.existing_dir(dest, default, "convert_dest_directory")
        target = usable(folder / config.model_name, "model_name")
        if target.exists():
            raise ModelExists(f"{target} already exists")
        try:
            config_dir = self.catalogue.diffusers_config_dir(config)
        except Exception as exc:
            raise ModelsUnavailable(f"{key} cannot be read: {exc}") from None
        if config_dir is None:
            raise ModelsUnavailable(
                f"the server has no diffusers config for {config.base_model}, so {key} cannot be converted offline"
            )
        self.catalogue.work_dir.mkdir(parents=True, exist_ok=True)
        return config, self.catalogue.absolute_path(config), target, config_dir

    def _finish_convert(self, key: str, before: ModelConfig, out: Path, target: Path, started: float) -> ModelConfig:
        self.catalogue.reload()
        config = self.catalogue.existing(key)
        if config.path != before.path:
            raise ModelExists(f"{key} changed while it was being converted; nothing was changed")
        if target.exists():
            raise ModelExists(f"{target} already exists")
        convert.place(out, target)
        new = msgspec.structs.replace(
            config, path=self.registry.stored_path(target), model_format="diffusers", config=None, error=None
        )
        checkpoint = self.catalogue.absolute_path(config)
        self.catalogue.commit(put=[new])
        if self.paths.owned(checkpoint):
            convert.remove(checkpoint)
        log.info("converted %s to %s in %.1f s", key, target, time.monotonic() - started)
        self.catalogue.changed(SyncResult(added=[], removed=[], updated=[key]))
        return new

    # -- merge -------------------------------------------------------------------------------------

    async def merge(self, base_model: str, request: MergeRequest) -> ModelConfig:
        merged, paths, target, work = await asyncio.to_thread(self._plan_merge, base_model, request)
        names = request.model_names
        out = work / target.name
        merge_files = merge.merge_checkpoints if merged.model_format == "checkpoint" else merge.merge_diffusers
        try:
            try:
                await asyncio.to_thread(
                    merge_files, paths, names, out, alpha=request.alpha, interp=request.interp, force=request.force
                )
            except merge.MergeError as exc:
                raise NotApplicable(str(exc)) from None
            except Exception as exc:
                log.exception("merging %s failed", names)
                raise ModelsUnavailable(f"merging failed: {exc}") from None
            async with self.catalogue.lock:
                return await asyncio.to_thread(self._finish_merge, merged, out, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _plan_merge(self, base_model: str, request: MergeRequest) -> tuple[ModelConfig, list[Path], Path, Path]:
        names = request.model_names
        if len(names) == 3 and request.interp != "add_difference":
            raise BadModelRequest("three models merge only with interp add_difference")
        if request.interp == "add_difference" and len(names) != 3:
            raise BadModelRequest("add_difference needs three models: A + (B - C) * alpha")
        if len(set(names)) != len(names):
            raise BadModelRequest("model_names must name different models")
        configs = [self.catalogue.existing(f"{base_model}/main/{name}") for name in names]
        formats = {c.model_format for c in configs}
        paths = [self.catalogue.absolute_path(c) for c in configs]
        is_checkpoint = formats == {"checkpoint"}
        if is_checkpoint and not all(p.name.lower().endswith(".safetensors") for p in paths):
            raise NotApplicable("checkpoints merge only as .safetensors; convert the others first")
        if not is_checkpoint and formats != {"diffusers"}:
            raise NotApplicable("models to merge must all be diffusers folders or all .safetensors checkpoints")
        name = request.merged_model_name or "+".join(names)
        key = f"{base_model}/main/{name}"
        if self.registry.is_taken(key):
            raise ModelExists(f"{key} is already registered")
        default = self.models_dir / base_model / "main"
        folder = self.paths.existing_dir(request.merge_dest_directory, default, "merge_dest_directory")
        target = usable(folder / (f"{name}.safetensors" if is_checkpoint else name), "merged_model_name")
        if target.exists():
            raise ModelExists(f"{target} already exists")
        try:
            if is_checkpoint:
                merge.check_checkpoints(paths, names, request.force)
            else:
                merge.check_diffusers(paths, names, request.force)
        except merge.MergeError as exc:
            raise NotApplicable(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ModelsUnavailable(f"the models to merge cannot be read: {exc}") from None
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
        return merged, paths, target, self.operations.new_work_dir("merge-")

    def _finish_merge(self, merged: ModelConfig, out: Path, target: Path) -> ModelConfig:
        self.catalogue.reload()
        if self.registry.is_taken(merged.key):
            raise ModelExists(f"{merged.key} is already registered")
        if target.exists():
            raise ModelExists(f"{target} already exists")
        convert.place(out, target)
        merged = msgspec.structs.replace(merged, path=self.registry.stored_path(target))
        self.catalogue.commit(put=[merged])
        self.catalogue.changed(SyncResult(added=[merged.key], removed=[], updated=[]))
        return merged
