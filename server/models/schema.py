"""Model payloads of the contract (docs/api.md §Models)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# `any`: models that fit every base (upscalers work on pixels, not on a diffusion model's latents).
BaseModel = Literal["sd-1", "sd-2", "sdxl", "sdxl-refiner", "any"]
# Bases with diffusion weights to merge; `any` holds upscalers, which have none in common.
MergeableBase = Literal["sd-1", "sd-2", "sdxl", "sdxl-refiner"]
ModelType = Literal["main", "vae", "lora", "controlnet", "embedding", "upscale"]
ModelFormat = Literal["diffusers", "checkpoint", "lycoris", "embedding_file", "embedding_folder"]
ModelVariant = Literal["normal", "inpaint", "depth"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]
Interp = Literal["weighted_sum", "sigmoid", "inv_sigmoid", "add_difference"]

BASE_MODELS: tuple[str, ...] = ("sd-1", "sd-2", "sdxl", "sdxl-refiner", "any")
MERGEABLE_BASES: tuple[str, ...] = tuple(base for base in BASE_MODELS if base != "any")
MODEL_TYPES: tuple[str, ...] = ("main", "vae", "lora", "controlnet", "embedding", "upscale")

# A model name becomes a file or folder name when the server moves or writes the model, and a path segment of
# the model's URL: no slashes, no control characters (a newline would make the URL unroutable).
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^/\\\x00-\x1f\x7f]+$")]
# A path on the server as a client gives it: no operating system takes a NUL byte in a path.
PathText = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]


class ModelIdentifier(msgspec.Struct, kw_only=True):
    model_name: str
    base_model: BaseModel
    model_type: ModelType

    @property
    def key(self) -> str:
        return f"{self.base_model}/{self.model_type}/{self.model_name}"


class ModelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A registered model. As a request body (add, PATCH) every field is required except `error`,
    which the server computes and ignores on input."""

    model_name: ModelName
    base_model: BaseModel
    model_type: ModelType
    # As stored in models.yaml: relative to the root when inside it, absolute otherwise.
    path: PathText
    description: str | None
    model_format: ModelFormat
    variant: ModelVariant
    prediction_type: PredictionType | None
    # Legacy yaml of a checkpoint, relative to the server's configs folder (see /models/ckpt_confs).
    config: PathText | None
    vae: PathText | None
    # Why the files are unusable, or null.
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.base_model}/{self.model_type}/{self.model_name}"

    @property
    def identifier(self) -> ModelIdentifier:
        return ModelIdentifier(model_name=self.model_name, base_model=self.base_model, model_type=self.model_type)


class ModelsList(msgspec.Struct):
    models: list[ModelConfig]


class ModelsQuery(msgspec.Struct, forbid_unknown_fields=False):
    base_models: list[BaseModel] | None = None
    model_type: ModelType | None = None


class ImportRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # A path on the server (file or folder), an http(s) URL, or a Hugging Face repo id `owner/name`.
    location: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]
    # Overrides the guess for SD-2 models (epsilon for 512 px models, v_prediction for 768 px ones).
    prediction_type: PredictionType | None = None


class DeleteQuery(msgspec.Struct):
    delete_files: bool = False


class ConvertQuery(msgspec.Struct):
    convert_dest_directory: PathText | None = None


class MergeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model_names: Annotated[list[ModelName], msgspec.Meta(min_length=2, max_length=3)]
    merged_model_name: ModelName | None = None
    alpha: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    interp: Interp = "weighted_sum"
    force: bool = False
    merge_dest_directory: PathText | None = None


class SearchQuery(msgspec.Struct):
    search_path: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^\x00]*$")]


class SyncResult(msgspec.Struct):
    added: list[str]
    removed: list[str]
    updated: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.updated)
