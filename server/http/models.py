"""`/api/v1/models/*`: list, get, import, add, update, delete, convert, merge, search, ckpt_confs, sync."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.http.errors import ApiError, ErrorItem
from server.http.io import json_response, operation
from server.http.state import services
from server.models.catalogue import ModelCatalogue
from server.models.schema import (
    BASE_MODELS,
    MERGEABLE_BASES,
    MODEL_TYPES,
    BaseModel,
    ConvertQuery,
    DeleteQuery,
    ImportRequest,
    MergeableBase,
    MergeRequest,
    ModelConfig,
    ModelsList,
    ModelsQuery,
    ModelType,
    SearchQuery,
    SyncResult,
)
from server.services import Services

TAGS = ("models",)
KEY_PARAMS = {
    "base_model": f"one of {', '.join(BASE_MODELS)}",
    "model_type": f"one of {', '.join(MODEL_TYPES)}",
    "model_name": "the model's name",
}
KEY_TYPES = {"base_model": BaseModel, "model_type": ModelType}


async def _catalogue(request: Request) -> ModelCatalogue:
    return await services(request).models.ready()


async def _ready(request: Request) -> Services:
    """The services, once models.yaml has been read (every model change starts from it)."""
    svc = services(request)
    await svc.models.ready()
    return svc


def _key(request: Request) -> str:
    params = request.path_params
    return f"{params['base_model']}/{params['model_type']}/{params['model_name']}"


@operation("List models", tags=TAGS, query=ModelsQuery, responses={200: ModelsList})
async def list_models(request: Request, *, query: ModelsQuery) -> Response:
    catalogue = await _catalogue(request)
    models = catalogue.list_models(query.base_models, query.model_type)
    return json_response(ModelsList(models=models))


@operation(
    "Get a model",
    tags=TAGS,
    responses={200: ModelConfig, 404: None},
    path_params=KEY_PARAMS,
    path_types=KEY_TYPES,
)
async def get_model(request: Request) -> Response:
    catalogue = await _catalogue(request)
    return json_response(catalogue.existing(_key(request)))


@operation(
    "Import a model from a server path, an http(s) URL or a Hugging Face repo id",
    tags=TAGS,
    body=ImportRequest,
    responses={201: ModelConfig, 403: None, 404: None, 409: None, 415: None, 424: None},
)
async def import_model(request: Request, *, body: ImportRequest) -> Response:
    svc = await _ready(request)
    config = await svc.model_operations.import_model(body)
    return json_response(config, 201)


@operation(
    "Register a model whose files are already in place",
    tags=TAGS,
    body=ModelConfig,
    responses={201: ModelConfig, 403: None, 404: None, 409: None, 422: None},
)
async def add_model(request: Request, *, body: ModelConfig) -> Response:
    svc = await _ready(request)
    config = await svc.model_operations.add(body)
    return json_response(config, 201)


@operation(
    "Update a model (the full config); a new name or base renames it",
    tags=TAGS,
    body=ModelConfig,
    responses={200: ModelConfig, 404: None, 409: None, 422: None},
    path_params=KEY_PARAMS,
    path_types=KEY_TYPES,
)
async def update_model(request: Request, *, body: ModelConfig) -> Response:
    svc = await _ready(request)
    config = await svc.model_operations.update(_key(request), body)
    return json_response(config)


@operation(
    "Unregister a model, and delete its files if they are in the models folder",
    tags=TAGS,
    query=DeleteQuery,
    responses={204: None, 403: None, 404: None},
    path_params=KEY_PARAMS,
    path_types=KEY_TYPES,
)
async def delete_model(request: Request, *, query: DeleteQuery) -> Response:
    svc = await _ready(request)
    await svc.model_operations.delete(_key(request), query.delete_files)
    return Response(status_code=204)


@operation(
    "Convert a checkpoint to a diffusers folder, which replaces it",
    tags=TAGS,
    query=ConvertQuery,
    responses={200: ModelConfig, 400: None, 403: None, 404: None, 409: None, 424: None},
    path_params=KEY_PARAMS,
    path_types=KEY_TYPES,
)
async def convert_model(request: Request, *, query: ConvertQuery) -> Response:
    svc = await _ready(request)
    config = await svc.model_transforms.convert(_key(request), query.convert_dest_directory)
    return json_response(config)


@operation(
    "Merge two or three models of one base",
    tags=TAGS,
    body=MergeRequest,
    responses={200: ModelConfig, 400: None, 403: None, 404: None, 409: None, 422: None},
    path_params={"base_model": f"one of {', '.join(MERGEABLE_BASES)}"},
    path_types={"base_model": MergeableBase},
)
async def merge_models(request: Request, *, body: MergeRequest) -> Response:
    base_model = request.path_params["base_model"]
    if base_model not in MERGEABLE_BASES:
        raise ApiError(
            422,
            f"base_model must be one of {', '.join(MERGEABLE_BASES)}, not {base_model!r}",
            [ErrorItem(loc=["path", "base_model"], msg="unknown base model")],
        )
    svc = await _ready(request)
    config = await svc.model_transforms.merge(base_model, body)
    return json_response(config)


@operation(
    "Every model file and folder below a server folder",
    tags=TAGS,
    query=SearchQuery,
    responses={200: list[str], 403: None, 404: None, 422: None},
)
async def search_models(request: Request, *, query: SearchQuery) -> Response:
    svc = await _ready(request)
    return json_response(await svc.model_operations.search(query.search_path))


@operation("Legacy checkpoint configs the server ships", tags=TAGS, responses={200: list[str]})
async def ckpt_confs(request: Request) -> Response:
    catalogue = await _catalogue(request)
    return json_response(catalogue.ckpt_confs())


@operation(
    "Make the model list, models.yaml and the model folders agree",
    tags=TAGS,
    responses={200: SyncResult, 424: None},
)
async def sync_models(request: Request) -> Response:
    catalogue = await _catalogue(request)
    return json_response(await catalogue.sync())


routes = [
    Route("/models/", list_models, methods=["GET"]),
    Route("/models/search", search_models, methods=["GET"]),
    Route("/models/ckpt_confs", ckpt_confs, methods=["GET"]),
    Route("/models/sync", sync_models, methods=["POST"]),
    Route("/models/import", import_model, methods=["POST"]),
    Route("/models/add", add_model, methods=["POST"]),
    Route("/models/convert/{base_model}/{model_type}/{model_name}", convert_model, methods=["PUT"]),
    Route("/models/merge/{base_model}", merge_models, methods=["PUT"]),
    Route("/models/{base_model}/{model_type}/{model_name}", get_model, methods=["GET"]),
    Route("/models/{base_model}/{model_type}/{model_name}", update_model, methods=["PATCH"]),
    Route("/models/{base_model}/{model_type}/{model_name}", delete_model, methods=["DELETE"]),
]
