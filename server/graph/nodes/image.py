"""`image` (an existing image by name) and the image operations. Each operation saves its result through the
image service, like InvokeAI's, so its output is an image name the next node (or a person) can use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from server.graph.context import InvocationContext
from server.graph.fields import BoardField, CoreMetadata, ImageField
from server.graph.nodes.base import REQUIRED, WIRE, Node
from server.graph.nodes.latents import ImageOutput

if TYPE_CHECKING:
    from PIL import Image

    from server.images.schema import ImageCategory

Size = Annotated[int, msgspec.Meta(ge=1, le=16384)]
Offset = Annotated[int, msgspec.Meta(ge=-16384, le=16384)]
_RESAMPLE = {"nearest": 0, "box": 4, "bilinear": 2, "hamming": 5, "bicubic": 3, "lanczos": 1}


class ImageNode(Node, tag="image", kw_only=True):
    """An image already in the gallery, by name."""

    image: Annotated[ImageField | None, REQUIRED] = None
    output = ImageOutput
    cacheable = False  # the image may be deleted between runs
    category = "image"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        assert self.image is not None
        dto = ctx.image_dto(self.image.image_name)  # its record has the size: no need to decode the file
        return ImageOutput(image=self.image, width=dto.width, height=dto.height)


class ImageOperation(Node, kw_only=True):
    """What every image operation has: where its result goes (a board, or the intermediates)."""

    board: BoardField | None = None
    is_intermediate: bool = False
    # Generation settings to embed in the PNG (a graph's final image, when it is not `l2i`'s: inpainting's paste).
    metadata: Annotated[CoreMetadata | None, WIRE] = None
    output = ImageOutput
    cacheable = False  # every run saves a new image
    category = "image"

    def _save(self, ctx: InvocationContext, image: Image.Image, category: ImageCategory = "general") -> ImageOutput:
        dto = ctx.save_image(
            image,
            is_intermediate=self.is_intermediate,
            board_id=self.board.board_id if self.board else None,
            category=category,
            metadata=msgspec.json.encode(self.metadata).decode() if self.metadata is not None else None,
        )
        return ImageOutput(image=ImageField(image_name=dto.image_name), width=dto.width, height=dto.height)


class ImageResizeNode(ImageOperation, tag="img_resize", kw_only=True):
    """Resize to exactly `width`×`height`."""

    image: Annotated[ImageField | None, REQUIRED] = None
    width: Size = 512
    height: Size = 512
    resample_mode: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "bicubic"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        assert self.image is not None
        image = ctx.open_image(self.image.image_name)
        return self._save(ctx, image.resize((self.width, self.height), resample=_RESAMPLE[self.resample_mode]))


class ImageCropNode(ImageOperation, tag="img_crop", kw_only=True):
    """Cut out `width`×`height` at (`x`, `y`); parts outside the image are transparent."""

    image: Annotated[ImageField | None, REQUIRED] = None
    x: Offset = 0
    y: Offset = 0
    width: Size = 512
    height: Size = 512

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        from PIL import Image

        assert self.image is not None
        image = ctx.open_image(self.image.image_name)
        canvas = Image.new("RGBA", (self.width, self.height), (0, 0, 0, 0))
        canvas.paste(image, (-self.x, -self.y))
        return self._save(ctx, canvas)


class ImagePasteNode(ImageOperation, tag="img_paste", kw_only=True):
    """Paste `image` onto `base_image` at (`x`, `y`), through `mask` when one is given (white takes the image:
    after inpainting, everything outside the mask stays the base's, pixel for pixel)."""

    base_image: Annotated[ImageField | None, REQUIRED] = None
    image: Annotated[ImageField | None, REQUIRED] = None
    mask: ImageField | None = None
    x: Offset = 0
    y: Offset = 0

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        assert self.base_image is not None and self.image is not None
        base = ctx.open_image(self.base_image.image_name)
        if base.mode not in ("RGB", "RGBA"):
            base = base.convert("RGBA")
        image = ctx.open_image(self.image.image_name).convert("RGBA")
        if self.mask is not None:
            # White: take the pasted image; black: keep the base. A mask of another size is stretched to the image.
            mask = ctx.open_image(self.mask.image_name).convert("L")
            if mask.size != image.size:
                mask = mask.resize(image.size)
        else:
            mask = image.getchannel("A")
        result = base.copy()
        result.paste(image.convert(base.mode), (self.x, self.y), mask)
        return self._save(ctx, result)


class ImageBlurNode(ImageOperation, tag="img_blur", kw_only=True):
    """Blur by `radius` pixels."""

    image: Annotated[ImageField | None, REQUIRED] = None
    radius: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 8.0
    blur_type: Literal["gaussian", "box"] = "gaussian"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        from PIL import ImageFilter

        assert self.image is not None
        image = ctx.open_image(self.image.image_name)
        kind = ImageFilter.GaussianBlur if self.blur_type == "gaussian" else ImageFilter.BoxBlur
        return self._save(ctx, image.filter(kind(self.radius)))


class ImageConvertNode(ImageOperation, tag="img_conv", kw_only=True):
    """Convert to another colour mode (the PNG-storable ones)."""

    image: Annotated[ImageField | None, REQUIRED] = None
    mode: Literal["L", "LA", "RGB", "RGBA", "1"] = "L"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        assert self.image is not None
        image = ctx.open_image(self.image.image_name)
        return self._save(ctx, image.convert(self.mode))
