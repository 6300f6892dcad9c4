"""What every `/sdapi/v1` endpoint shares: the per-app A1111 state (its job runner, options and model hashes),
the catalogue of registered models, and the error that names the request field at fault."""

from __future__ import annotations

from starlette.requests import Request

from server.http.a1111 import translate
from server.http.a1111.hashes import ModelHashes
from server.http.a1111.jobs import Jobs
from server.http.a1111.options import OptionsStore
from server.http.errors import ApiError, ErrorItem
from server.http.state import services
from server.models.schema import ModelConfig
from server.services import Services

TAGS = ("a1111",)


class A1111State:
    def __init__(self, svc: Services) -> None:
        self.jobs = Jobs(svc)
        self.options = OptionsStore(svc.settings.configs_dir / "a1111_options.json")
        self.hashes = ModelHashes(svc.settings.models_dir / ".cache" / "a1111_hashes.json")


def state_of(request: Request) -> A1111State:
    state = getattr(request.app.state, "a1111", None)
    svc = services(request)
    if state is None or state.jobs.services is not svc:
        state = request.app.state.a1111 = A1111State(svc)
    return state


def problem(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, message, [ErrorItem(loc=["body", *field.split(".")], msg=message)])


async def catalogue_of(request: Request) -> translate.Catalogue:
    models = await services(request).models.ready()
    usable = [c for c in models.list_models() if c.error is None]

    def of(kind: str) -> list[ModelConfig]:
        return sorted((c for c in usable if c.model_type == kind), key=lambda c: c.model_name)

    mains, vaes = of("main"), of("vae")
    # Asking queues the models not hashed yet (in the background); until then they have no hash.
    hashed = [*mains, *vaes]
    found = await state_of(request).hashes.known([models.absolute_path(c) for c in hashed])
    return translate.Catalogue(
        mains=mains,
        vaes=vaes,
        loras=of("lora"),
        embeddings=of("embedding"),
        upscalers=of("upscale"),
        hashes={c.key: sha for c, sha in zip(hashed, found, strict=True) if sha},
    )
