"""Model payloads of the contract (../shared/API.md §Models)."""

from __future__ import annotations

from typing import Literal

import msgspec

BaseModel = Literal["sd-1", "sd-2", "sdxl", "sdxl-refiner"]
ModelType = Literal["main", "vae", "lora", "controlnet", "embedding"]


class ModelIdentifier(msgspec.Struct, kw_only=True):
    model_name: str
    base_model: BaseModel
    model_type: ModelType

    @property
    def key(self) -> str:
        return f"{self.base_model}/{self.model_type}/{self.model_name}"
