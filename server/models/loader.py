"""Loads the parts of a main model for generation and keeps them in an LRU cache bounded in bytes.

Parts (`unet`, `text_encoder`, `tokenizer`, SDXL's `text_encoder_2` and `tokenizer_2`, `vae`, `scheduler`)
are loaded on first use from the model catalogue's records: a diffusers folder part by part, a single-file checkpoint whole (one read of the file
gives every part; all of them go into the cache). Weights go to the executor's device and precision.
Called from the executor's worker thread only: loading is torch work."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import Settings
from server.events import Emit, ModelLoadCompleted, ModelLoadStarted
from server.models import controlnets, upscalers
from server.models.adapters import AdapterError, read_lora
from server.models.devices import resolve_device
from server.models.embeddings import EmbeddingError, read_embedding
from server.models.libraries import quiet_ml_libraries
from server.models.schema import ModelConfig, ModelIdentifier
from server.models.weights import UnreadableWeights

if TYPE_CHECKING:
    from server.models.catalogue import ModelCatalogue

log = logging.getLogger(__name__)

SUBMODELS = ("unet", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae", "scheduler")
# CLIP's context; some tokenizer configs leave model_max_length at "unlimited" (~1e30).
CLIP_MAX_LENGTH = 77


class ModelLoadError(Exception):
    """The model is unknown or its files cannot be loaded; the message says which and why."""


@dataclass
class _Entry:
    value: Any
    size: int


class ModelLoader:
    def __init__(self, models: ModelCatalogue, settings: Settings, emit: Emit) -> None:
        self.models = models
        self.settings = settings
        self.emit = emit
        self.limit_bytes = settings.model_cache_bytes
        self._cache: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.total_bytes = 0
        # Counters for tests and benchmarks: parts read from disk, and parts served from the cache.
        self.loads = 0
        self.hits = 0
        self.device: Any = None
        self.dtype: Any = None

    def ensure_device(self) -> None:
        if self.device is None:
            quiet_ml_libraries()
            self.device, self.dtype = resolve_device(self.settings.device, self.settings.precision)
            log.info("generation runs on %s (%s)", self.device, str(self.dtype).removeprefix("torch."))

    def cached_parts(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(key[0], key[1]) for key in self._cache]

    def load(self, model: ModelIdentifier, submodel: str | None = None, session_id: str | None = None) -> Any:
        """The part of a main model, or a whole model of another type (its `submodel` is its type: `vae`, `lora`,
        `embedding`...), from the cache or from disk (announced by model_load_started/completed events)."""
        submodel = submodel or model.model_type
        if model.model_type == "main" and submodel not in SUBMODELS:
            raise ModelLoadError(f"unknown submodel {submodel!r}; one of {', '.join(SUBMODELS)}")
        if model.model_type != "main" and submodel != model.model_type:
            raise ModelLoadError(f"{model.key} is a {model.model_type} model; it has no {submodel}")
        self.ensure_device()
        config = self._config(model)
        path = self._absolute_path(config)
        key = self._key(model, submodel, path)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return entry.value
        self.emit(ModelLoadStarted(session_id=session_id, model=model, submodel=submodel))
        try:
            if model.model_type != "main":
                value = self._load_whole(config, path)
                self._put(key, value)
            elif config.model_format == "diffusers":
                value = self._load_diffusers_part(config, path, submodel)
                self._put(key, value)
            else:
                parts = self._load_checkpoint(config, path)
                for name, part in parts.items():
                    self._put(self._key(model, name, path), part)
                if submodel not in parts:
                    raise ModelLoadError(f"model {model.key} has no {submodel}")
                value = parts[submodel]
        except ModelLoadError:
            raise
        except (
            AdapterError,
            EmbeddingError,
            UnreadableWeights,
            upscalers.NotAnUpscaler,
            controlnets.ControlNetLoadError,
        ) as exc:
            raise ModelLoadError(str(exc)) from exc
        except Exception as exc:
            raise ModelLoadError(f"cannot load the {submodel} of model {model.key} from {path}: {exc}") from exc
        self.loads += 1
        self.emit(ModelLoadCompleted(session_id=session_id, model=model, submodel=submodel))
        return value

    # lookup

    def _config(self, model: ModelIdentifier) -> ModelConfig:
        try:
            config = self.models.get(model.base_model, model.model_type, model.model_name)
        except KeyError:
            raise ModelLoadError(f"model {model.key} is not registered; see GET /api/v1/models/") from None
        if config.error:
            raise ModelLoadError(f"model {model.key} cannot be used: {config.error}")
        return config

    def _absolute_path(self, config: ModelConfig) -> Path:
        path = self.models.absolute_path(config)
        if not path.exists():
            raise ModelLoadError(f"the files of model {config.model_name} are missing: {path}")
        return path

    @staticmethod
    def _key(model: ModelIdentifier, submodel: str, path: Path) -> tuple[Any, ...]:
        # The files' mtime is part of the key: a model replaced on disk is loaded afresh.
        return (model.key, submodel, str(path), path.stat().st_mtime_ns)

    # cache

    def _put(self, key: tuple[Any, ...], value: Any) -> None:
        size = _size_bytes(value)
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self.total_bytes -= old.size
            self._cache[key] = _Entry(value, size)
            self.total_bytes += size
            # Evict least recently used parts; the newest stays even when it alone exceeds the limit.
            while self.total_bytes > self.limit_bytes and len(self._cache) > 1:
                _, evicted = self._cache.popitem(last=False)
                self.total_bytes -= evicted.size

    # loading

    def _load_diffusers_part(self, config: ModelConfig, path: Path, submodel: str) -> Any:
        if submodel == "scheduler":
            return self._scheduler_config(
                json.loads((path / "scheduler" / "scheduler_config.json").read_text()), config
            )
        if not (path / submodel).is_dir():
            raise ModelLoadError(f"model {config.key} has no {submodel} (no {submodel}/ folder in {path})")
        if submodel.startswith("tokenizer"):
            from transformers import CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(path, subfolder=submodel, local_files_only=True)
            return _fix_tokenizer(tokenizer)
        if submodel.startswith("text_encoder"):
            # SDXL's second encoder has the pooled projection the UNet's added embedding takes.
            import transformers

            class_name = _class_name(path / submodel / "config.json", default="CLIPTextModel")
            encoder_class = getattr(transformers, class_name, None)
            if encoder_class is None or not class_name.startswith("CLIPTextModel"):
                raise ModelLoadError(f"model {config.key}: its {submodel} is a {class_name}, not a CLIP text model")
            module = encoder_class.from_pretrained(
                path, subfolder=submodel, local_files_only=True, torch_dtype=self.dtype
            )
        elif submodel == "unet":
            from diffusers import UNet2DConditionModel

            module = UNet2DConditionModel.from_pretrained(
                path, subfolder="unet", local_files_only=True, torch_dtype=self.dtype
            )
        else:
            module = self._load_vae(config, path)
        return self._place(module)

    def _load_whole(self, config: ModelConfig, path: Path) -> Any:
        """A model that is not a main model, whole."""
        if config.model_type == "lora":
            return read_lora(path, config.key)
        if config.model_type == "embedding":
            return read_embedding(path, config.key)
        if config.model_type == "vae":
            return self._place(self._load_vae_model(config, path))
        if config.model_type == "upscale":
            return upscalers.load(path, config.key, self.device, self.dtype)
        if config.model_type == "controlnet":
            shipped = None if path.is_dir() else self.models.shipped_config_dir(config.base_model)
            return self._place(controlnets.load(path, config.key, shipped, self.dtype))
        raise ModelLoadError(f"{config.key}: models of type {config.model_type} cannot be loaded here")

    def _load_vae_model(self, config: ModelConfig, path: Path) -> Any:
        """A registered VAE: a diffusers folder, or a single file read with the shipped config of its base."""
        from diffusers import AutoencoderKL

        if path.is_dir():
            return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=self.dtype)
        config_dir = self.models.shipped_config_dir(config.base_model)
        if config_dir is None:
            raise ModelLoadError(f"the server has no VAE config for {config.base_model}, so {config.key} cannot load")
        return AutoencoderKL.from_single_file(
            str(path), config=str(config_dir), subfolder="vae", local_files_only=True, torch_dtype=self.dtype
        )

    def _load_vae(self, config: ModelConfig, path: Path) -> Any:
        from diffusers import AutoencoderKL

        override = config.vae
        if override:
            vae_path = Path(override)
            if not vae_path.is_absolute():
                vae_path = self.settings.root_path / vae_path
            if not vae_path.is_dir():
                raise ModelLoadError(f"the VAE of model {config.model_name} must be a diffusers folder: {vae_path}")
            folder, subfolder = vae_path, None
        else:
            folder, subfolder = path, "vae"
        vae_config = folder / (subfolder or "") / "config.json"
        return AutoencoderKL.from_pretrained(
            folder, subfolder=subfolder, local_files_only=True, torch_dtype=self.vae_dtype(vae_config)
        )

    def vae_dtype(self, vae_config: Path | dict[str, Any]) -> Any:
        """The VAE's precision: the generation's, except an fp16 run of a VAE that says `force_upcast` (SDXL's,
        which overflows to NaN, a black image, in fp16) stays in fp32 as diffusers' pipelines keep it."""
        import torch

        if self.dtype != torch.float16:
            return self.dtype
        if isinstance(vae_config, Path):
            try:
                vae_config = json.loads(vae_config.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                vae_config = {}
        return torch.float32 if isinstance(vae_config, dict) and vae_config.get("force_upcast") else self.dtype

    def _load_checkpoint(self, config: ModelConfig, path: Path) -> dict[str, Any]:
        from server.models.single_file import load_pipeline_from_single_file

        config_dir = self.models.diffusers_config_dir(config)
        if config_dir is None:
            raise ModelLoadError(f"no diffusers configuration is known for checkpoint {path.name}")
        pipe: Any = load_pipeline_from_single_file(
            path, self.models.legacy_config_path(config), config_dir, self.dtype, prediction_type=config.prediction_type
        )
        # Every part the pipeline has (SDXL's second text encoder and tokenizer; a refiner has no first one).
        parts: dict[str, Any] = {"scheduler": self._scheduler_config(dict(pipe.scheduler.config), config)}
        for name in ("unet", "text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                parts[name] = self._place(getattr(pipe, name))
        for name in ("tokenizer", "tokenizer_2"):
            if getattr(pipe, name, None) is not None:
                parts[name] = _fix_tokenizer(getattr(pipe, name))
        vae = self._load_vae(config, path) if config.vae else pipe.vae
        parts["vae"] = self._place(vae.to(self.vae_dtype(dict(vae.config))))
        return parts

    @staticmethod
    def _scheduler_config(scheduler: dict[str, Any], config: ModelConfig) -> dict[str, Any]:
        prediction_type = config.prediction_type
        if prediction_type:
            scheduler["prediction_type"] = prediction_type
        return scheduler

    def _place(self, module: Any) -> Any:
        # Loaded in the right dtype already (torch_dtype): a cast here would undo per-module exceptions.
        module = module.to(self.device)
        module.eval()
        module.requires_grad_(False)
        return module


def _class_name(config_file: Path, default: str) -> str:
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    architectures = data.get("architectures") if isinstance(data, dict) else None
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return default


def _fix_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.model_max_length > 10_000:
        tokenizer.model_max_length = CLIP_MAX_LENGTH
    return tokenizer


def _size_bytes(value: Any) -> int:
    parameters = getattr(value, "parameters", None)
    if parameters is None:
        return 0
    total = sum(p.numel() * p.element_size() for p in value.parameters())
    return total + sum(b.numel() * b.element_size() for b in value.buffers())
