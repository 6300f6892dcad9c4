"""Loads the parts of a main model for generation and keeps them in the model cache (server/models/model_cache.py:
least recently used first, bounded in bytes, with a GPU tier and a RAM tier).

Parts (`unet`, `text_encoder`, `tokenizer`, SDXL's `text_encoder_2` and `tokenizer_2`, `vae`, `scheduler`)
are loaded on first use from the model catalogue's records: a diffusers folder part by part, a single-file checkpoint whole (one read of the file
gives every part; all of them go into the cache). Weights go to the executor's device and precision.
Called from the executor's worker thread only: loading is torch work."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import Settings
from server.events import Emit, ModelLoadCompleted, ModelLoadStarted
from server.models import controlnets, upscalers
from server.models.adapters import AdapterError, read_lora
from server.models.devices import resolve_device
from server.models.embeddings import EmbeddingError, read_embedding
from server.models.libraries import quiet_ml_libraries
from server.models.model_cache import CacheState, ModelCache, estimated_bytes
from server.models.offload import offload_sequentially
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


# Working memory left free on the GPU for activations when vram_cache_gb is not set.
VRAM_HEADROOM_BYTES = 2 * 1024**3


class ModelLoader:
    def __init__(self, models: ModelCatalogue, settings: Settings, emit: Emit) -> None:
        self.models = models
        self.settings = settings
        self.emit = emit
        self.cache = ModelCache(settings.ram_cache_bytes)
        # Counters for tests and benchmarks: parts read from disk, and parts served from the cache.
        self.loads = 0
        self.hits = 0
        self.device: Any = None
        self.dtype: Any = None

    def ensure_device(self) -> None:
        if self.device is None:
            quiet_ml_libraries()
            self.device, self.dtype = resolve_device(self.settings.device, self.settings.precision)
            self.cache.use_device(self.device, self._vram_limit())
            log.info(
                "generation runs on %s (%s, attention %s%s%s)",
                self.device,
                str(self.dtype).removeprefix("torch."),
                self.settings.attention,
                f", offload {self.settings.offload}" if self.settings.offload != "none" else "",
                ", compiled UNet" if self.settings.compile == "unet" else "",
            )

    def _vram_limit(self) -> int | None:
        # Offloaded sequentially, every part lives in RAM (one tier) and never moves as a whole.
        if self.device.type == "cpu" or self.settings.offload == "sequential":
            return None
        if self.settings.offload == "model":
            return 0
        if self.settings.vram_cache_gb is not None:
            return int(self.settings.vram_cache_gb * 1024**3)
        if self.device.type == "cuda":
            import torch

            total = torch.cuda.get_device_properties(self.device).total_memory
            return max(0, total - VRAM_HEADROOM_BYTES)
        return None

    def begin_node(self) -> None:
        """A node starts on the worker thread: what the previous one used may now move or leave."""
        self.cache.begin_node()

    def cached_parts(self) -> list[tuple[str, str]]:
        return [(key[0], key[1]) for key in self.cache.cached_keys()]

    @property
    def total_bytes(self) -> int:
        """Bytes of cached weights in RAM (all of them on the CPU)."""
        return self.cache.ram_bytes

    def state(self) -> CacheState:
        state = self.cache.state(self.loads, self.hits)
        if self.device is not None and self.device.type == "cuda":
            import torch

            state.device_allocated_bytes = torch.cuda.memory_allocated(self.device)
            state.device_peak_bytes = torch.cuda.max_memory_allocated(self.device)
        return state

    def compiled_unet(self, unet: Any) -> Any:
        """The UNet under torch.compile, made once per module; torch caches a compiled graph per input shape,
        so only the first run at a size pays for compiling."""
        import torch

        compiled = unet.__dict__.get("_imagegraph_compiled")
        if compiled is None:
            compiled = torch.compile(unet, dynamic=False)
            # Kept on the module itself (outside nn.Module's registry), so it leaves with it on eviction.
            object.__setattr__(unet, "_imagegraph_compiled", compiled)
        return compiled

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
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.emit(ModelLoadStarted(session_id=session_id, model=model, submodel=submodel))
        self.cache.make_room(self.estimated_bytes(config, path, submodel))
        try:
            if model.model_type != "main":
                value = self._load_whole(config, path)
                self.cache.put(key, value)
            elif config.model_format == "diffusers":
                value = self._load_diffusers_part(config, path, submodel)
                self.cache.put(key, value)
            else:
                parts = self._load_checkpoint(config, path)
                for name, part in parts.items():
                    self.cache.put(self._key(model, name, path), part)
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

    def estimated_bytes(self, config: ModelConfig, path: Path, submodel: str) -> int:
        """What loading this part will add to the cache, in the dtype it will have: an upcast VAE (SDXL's in an
        fp16 run) takes fp32's 4 bytes a value, not fp16's 2."""
        dtype = self.dtype
        if config.model_type == "vae":
            vae_config = self._vae_model_config(config, path)
            dtype = self.vae_dtype(vae_config) if vae_config else dtype
        elif submodel == "vae" and config.model_format == "diffusers" and not config.vae:
            dtype = self.vae_dtype(path / "vae" / "config.json")
        if config.model_type != "main" and path.is_dir():
            return estimated_bytes(path.parent, path.name, dtype)  # a whole model's folder
        if config.model_type != "main" or config.model_format != "diffusers":
            return estimated_bytes(path, None, dtype)
        return estimated_bytes(path, submodel, dtype)

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

        vae_config = self._vae_model_config(config, path)
        if vae_config is None:
            raise ModelLoadError(f"the server has no VAE config for {config.base_model}, so {config.key} cannot load")
        dtype = self.vae_dtype(vae_config)
        if path.is_dir():
            return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        return AutoencoderKL.from_single_file(
            str(path), config=str(vae_config.parent.parent), subfolder="vae", local_files_only=True, torch_dtype=dtype
        )

    def _vae_model_config(self, config: ModelConfig, path: Path) -> Path | None:
        """The config.json of a registered VAE: its folder's, or for a single file the shipped one of its base."""
        if path.is_dir():
            return path / "config.json"
        config_dir = self.models.shipped_config_dir(config.base_model)
        return config_dir / "vae" / "config.json" if config_dir is not None else None

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
        module.eval()
        module.requires_grad_(False)
        if hasattr(module, "set_attention_slice") and module.__class__.__name__ != "AutoencoderKL":
            # UNets and ControlNets; diffusers' own pipelines slice only those too.
            if self.settings.attention == "sliced":
                module.set_attention_slice("auto")
            if self.settings.channels_last:
                import torch

                module.to(memory_format=torch.channels_last)
        if self.settings.offload == "sequential":
            return offload_sequentially(module, self.device)
        return module.to(self.device)


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
