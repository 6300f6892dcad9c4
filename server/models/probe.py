"""What a model file or folder is, without loading its weights.

Diffusers folders are recognised by `model_index.json` / `config.json` and their `_class_name`
(`folder_kinds`); single files by their tensor names and shapes (`file_kinds`), read without reading the
weights and without running any pickle (`state_dict_shapes`)."""

from __future__ import annotations

from pathlib import Path

from server.models import file_kinds, folder_kinds, state_dict_shapes
from server.models.checkpoint_config import default_legacy_config, has_sibling_yaml
from server.models.model_files import MODEL_SUFFIXES
from server.models.probe_result import Incomplete, NotAModel, ProbeResult, Unreadable, UnsafeFile

# Callers catch these as `probe.NotAModel`, ... and read a `probe.ProbeResult`.
__all__ = ["Incomplete", "NotAModel", "ProbeResult", "Unreadable", "UnsafeFile", "probe"]


def probe(
    path: Path,
    *,
    hint_base: str | None = None,
    hint_type: str | None = None,
    prediction_type: str | None = None,
) -> ProbeResult:
    """Recognise `path`. `hint_base`/`hint_type` come from the folder it sits in (`models/<base>/<type>/`,
    `autoimport/<type>/`) and settle what the weights cannot tell (e.g. a VAE's base).
    Raises NotAModel (or a subclass) with a sentence saying why."""
    if path.is_dir():
        result = folder_kinds.classify(path, hint_base, hint_type)
    elif path.is_file():
        if not path.name.lower().endswith(MODEL_SUFFIXES):
            raise NotAModel(f"{path.name} is not a model file (expected one of {', '.join(MODEL_SUFFIXES)})")
        shapes, metadata, extra = state_dict_shapes.read(path)
        result = file_kinds.classify(path, shapes, metadata, extra, hint_base, hint_type)
    else:
        raise NotAModel(f"{path} is neither a file nor a folder")
    if prediction_type is not None and result.model_type == "main":
        result.prediction_type = prediction_type
        if result.model_format == "checkpoint" and not has_sibling_yaml(path):
            result.config = default_legacy_config(result.base_model, result.variant, prediction_type)
    return result
