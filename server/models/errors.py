"""What can go wrong with a model request, one exception per kind, each with a sentence a person can act on.

They know nothing of HTTP: `server/http/errors.py` maps each kind to its status code in one table."""

from __future__ import annotations


class ModelError(Exception):
    """`detail` is what the person is told; `loc` names the request field at fault, when one is, and `msg` says
    in a few words what is wrong with it."""

    def __init__(self, detail: str, loc: list[str | int] | None = None, msg: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.loc = loc
        self.msg = msg or detail


class ModelNotFound(ModelError):
    """No model is registered under that key."""


class PathNotFound(ModelError):
    """A path named in the request does not exist (or is not the folder it must be)."""


class ModelExists(ModelError):
    """The name, the files or the destination are already taken, or changed while we worked."""


class PathNotAllowed(ModelError):
    """A path outside the folders this server may read, write or delete."""


class BadModelRequest(ModelError):
    """The request itself is wrong (a relative path, a name too long, three models without add_difference)."""


class NotApplicable(ModelError):
    """The operation does not apply to these models (converting a diffusers folder, merging mismatched ones)."""


class UnsupportedModel(ModelError):
    """The files are readable but not a model we recognise."""


class ModelsUnavailable(ModelError):
    """Something the request depends on failed: models.yaml does not parse, files cannot be read, a download
    or a conversion failed."""
