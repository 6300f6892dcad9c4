"""What probing a file or folder answers: a ProbeResult, or a NotAModel (or a subclass) saying why not."""

from __future__ import annotations

import msgspec


class NotAModel(Exception):
    """The file or folder is readable but is not a model we recognise (HTTP 415)."""


class UnsafeFile(NotAModel):
    """A pickle that would run code when loaded: refused, never unpickled."""


class Unreadable(NotAModel):
    """Could not be read as the format it claims; it may be incomplete (still being written)."""


class Incomplete(Unreadable):
    """Certainly incomplete: shorter than its own header says, or a folder missing parts."""


class ProbeResult(msgspec.Struct, kw_only=True):
    base_model: str
    model_type: str
    model_format: str
    variant: str = "normal"
    prediction_type: str | None = None
    # Legacy yaml for checkpoints: a name relative to the shipped configs folder, or an absolute path.
    config: str | None = None
