"""`/api/v1/images/*`: upload, list, DTO, metadata, the files themselves, patch and delete."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from email.utils import parsedate_to_datetime

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.http.errors import ApiError, ErrorItem, not_found
from server.http.io import json_response, operation
from server.http.state import services
from server.images.cache import CachedFile
from server.images.errors import UnknownBoard
from server.images.schema import (
    DeletedCount,
    DeletedImages,
    DeleteImages,
    ImageDTO,
    ImageList,
    ImageMetadata,
    ImagePatch,
    ImageUrls,
    ListImagesQuery,
    UploadQuery,
)
from server.images.service import ImageService

TAGS = ("images",)
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# The file is read into memory whole right after (decoding needs all of it), so spooling it to a temporary file
# as it arrives only adds a copy and a thread hop per chunk: 22 ms of a 3 MB upload, 2 ms in memory. Past this
# size a body still goes to disk while it arrives, so a slow client holds no more than this in memory meanwhile.
SPOOL_IN_MEMORY = 16 * 1024 * 1024


def _images(request: Request) -> ImageService:
    return services(request).images


def _unknown_board(exc: UnknownBoard, where: str) -> ApiError:
    return ApiError(422, str(exc), [ErrorItem(loc=[where, "board_id"], msg=str(exc))])


# Upload


async def _read_file_field(request: Request, field: str, limit: int) -> bytes:
    """The bytes of one multipart file field, refusing (413) as soon as the body grows past the limit."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, f"Send the image as multipart/form-data with a `{field}` field")
    too_large = ApiError(413, f"The upload is larger than the {limit:,}-byte limit (setting upload_max_bytes)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise too_large

    async def limited() -> AsyncGenerator[bytes, None]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + MULTIPART_OVERHEAD:
                raise too_large
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=1, max_fields=16, max_part_size=64 * 1024)
    parser.spool_max_size = SPOOL_IN_MEMORY
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"The multipart body could not be read: {exc.message}") from None
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise ApiError(
                422, f"`body.{field}` is required (a file)", [ErrorItem(loc=["body", field], msg="required")]
            )
        if upload.size is not None and upload.size > limit:
            raise too_large
        return await upload.read()
    finally:
        await form.close()


@operation(
    "Upload a PNG, JPEG or WebP image (stored as PNG, metadata kept)",
    tags=TAGS,
    query=UploadQuery,
    multipart_file="file",
    responses={201: ImageDTO, 413: None, 415: None, 422: None},
)
async def upload_image(request: Request, *, query: UploadQuery) -> Response:
    images = _images(request)
    data = await _read_file_field(request, "file", images.settings.upload_max_bytes)
    try:
        dto = await images.upload(
            data, category=query.image_category, is_intermediate=query.is_intermediate, board_id=query.board_id
        )
    except UnknownBoard as exc:
        raise _unknown_board(exc, "query") from None
    return json_response(dto, 201, headers={"Location": f"/api/v1/images/{dto.image_name}"})


# Records


@operation("List images, newest first by default", tags=TAGS, query=ListImagesQuery, responses={200: ImageList})
async def list_images(request: Request, *, query: ListImagesQuery) -> Response:
    items, total = await _images(request).list(query)
    return json_response(ImageList(items=items, offset=query.offset, limit=query.limit, total=total))


@operation("One image's record", tags=TAGS, responses={200: ImageDTO, 404: None})
async def get_image(request: Request) -> Response:
    name = request.path_params["image_name"]
    dto = await _images(request).get_dto(name)
    if dto is None:
        raise not_found("Image", name)
    return json_response(dto)


@operation(
    "The image's generation metadata and graph (accumulator nodes removed)",
    tags=TAGS,
    responses={200: ImageMetadata, 404: None},
)
async def get_metadata(request: Request) -> Response:
    name = request.path_params["image_name"]
    try:
        return json_response(await _images(request).metadata(name))
    except LookupError:
        raise not_found("Image", name) from None


@operation("The image's URLs", tags=TAGS, responses={200: ImageUrls, 404: None})
async def get_urls(request: Request) -> Response:
    name = request.path_params["image_name"]
    dto = await _images(request).get_dto(name)
    if dto is None:
        raise not_found("Image", name)
    return json_response(ImageUrls(image_name=name, image_url=dto.image_url, thumbnail_url=dto.thumbnail_url))


@operation(
    "Change an image's category, intermediate flag, board, star or session",
    tags=TAGS,
    body=ImagePatch,
    responses={200: ImageDTO, 404: None},
)
async def patch_image(request: Request, *, body: ImagePatch) -> Response:
    name = request.path_params["image_name"]
    try:
        return json_response(await _images(request).update(name, body))
    except UnknownBoard as exc:
        raise _unknown_board(exc, "body") from None
    except LookupError:
        raise not_found("Image", name) from None


@operation("Delete an image: record, file and thumbnail", tags=TAGS, responses={204: None, 404: None})
async def delete_image(request: Request) -> Response:
    name = request.path_params["image_name"]
    if not await _images(request).delete([name]):
        raise not_found("Image", name)
    return Response(status_code=204)


@operation(
    "Delete several images; names that do not exist are skipped",
    tags=TAGS,
    body=DeleteImages,
    responses={200: DeletedImages},
)
async def delete_images(request: Request, *, body: DeleteImages) -> Response:
    return json_response(DeletedImages(deleted=await _images(request).delete(body.image_names)))


@operation("Delete every intermediate image", tags=TAGS, responses={200: DeletedCount})
async def clear_intermediates(request: Request) -> Response:
    return json_response(DeletedCount(deleted=await _images(request).clear_intermediates()))


# Files


class _FileResponse(Response):
    """A cached file sent as is: headers were built once when it entered the cache."""

    def __init__(self, item: CachedFile) -> None:
        self.status_code = 200
        self.background = None
        self.body = item.body
        # A copy: middleware may append to the list it is given.
        self.raw_headers = list(item.raw_headers)


def _not_modified(item: CachedFile, request: Request) -> bool:
    # StaticFiles' rules: If-None-Match decides when present, else If-Modified-Since.
    headers = request.headers
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        return item.etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    if_modified_since = headers.get("if-modified-since")
    if if_modified_since:
        try:
            return parsedate_to_datetime(if_modified_since) >= parsedate_to_datetime(item.last_modified)
        except (TypeError, ValueError):
            return False
    return False


def _byte_range(range_header: str, size: int) -> tuple[int, int] | str | None:
    """One `bytes=a-b` range as (start, end exclusive); None to ignore the header (malformed, or several
    ranges, which we answer with the whole file as RFC 9110 allows); "unsatisfiable" when out of bounds."""
    unit, _, spec = range_header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        return None
    if last and not last.isdigit():
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


def _range_response(item: CachedFile, request: Request) -> Response | None:
    range_header = request.headers.get("range")
    if range_header is None:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range not in (item.etag, item.last_modified):
        return None  # the client holds another version: send it the whole file
    byte_range = _byte_range(range_header, len(item.body))
    if byte_range is None:
        return None
    if isinstance(byte_range, str):
        return Response(
            status_code=416,
            headers={"Content-Range": f"bytes */{len(item.body)}", "Content-Type": "application/json"},
            content=b'{"detail":"The requested range is outside the file"}',
        )
    start, end = byte_range
    headers = {name.decode(): value.decode() for name, value in item.raw_headers if name != b"content-length"}
    headers["content-range"] = f"bytes {start}-{end - 1}/{len(item.body)}"
    return Response(item.body[start:end], status_code=206, headers=headers)


async def _serve(request: Request, *, thumbnail: bool) -> Response:
    name = request.path_params["image_name"]
    try:
        item = await _images(request).get_file(name, thumbnail=thumbnail)
    except LookupError:
        raise not_found("Image", name) from None
    if _not_modified(item, request):
        return Response(status_code=304, headers={k.decode(): v.decode() for k, v in item.not_modified_headers})
    return _range_response(item, request) or _FileResponse(item)


_FILE_RESPONSES = {200: "image/png", 206: "image/png", 304: None, 404: None, 416: None}


@operation("The PNG (immutable; ETag, Last-Modified, Range)", tags=TAGS, responses=_FILE_RESPONSES)
async def get_full(request: Request) -> Response:
    return await _serve(request, thumbnail=False)


@operation(
    "The WebP thumbnail, longest side at most 256 (immutable; ETag, Last-Modified, Range)",
    tags=TAGS,
    responses={**_FILE_RESPONSES, 200: "image/webp", 206: "image/webp"},
)
async def get_thumbnail(request: Request) -> Response:
    return await _serve(request, thumbnail=True)


routes = [
    Route("/images/upload", upload_image, methods=["POST"]),
    Route("/images/delete", delete_images, methods=["POST"]),
    Route("/images/clear-intermediates", clear_intermediates, methods=["POST"]),
    Route("/images/", list_images, methods=["GET"]),
    Route("/images/{image_name}", get_image, methods=["GET"]),
    Route("/images/{image_name}", patch_image, methods=["PATCH"]),
    Route("/images/{image_name}", delete_image, methods=["DELETE"]),
    Route("/images/{image_name}/metadata", get_metadata, methods=["GET"]),
    Route("/images/{image_name}/full", get_full, methods=["GET"]),
    Route("/images/{image_name}/thumbnail", get_thumbnail, methods=["GET"]),
    Route("/images/{image_name}/urls", get_urls, methods=["GET"]),
]
