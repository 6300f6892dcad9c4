"""ControlNet: `controlnet` bundles a control image with its model and settings for `denoise_latents.control`;
`canny_image_processor` makes the edge map a Canny ControlNet reads (OpenCV's `Canny`).

Other processors (lineart, depth, normal maps, pose) need weights of their own, which no model folder holds yet;
`canny` needs none, so it works fully offline."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.graph.context import InvocationContext
from server.graph.fields import ControlField, ControlMode, ImageField, ResizeMode
from server.graph.nodes.base import REQUIRED, Node, Output, model_input
from server.graph.nodes.image import ImageOperation
from server.graph.nodes.latents import ImageOutput
from server.models.schema import ModelIdentifier

Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
Threshold = Annotated[int, msgspec.Meta(ge=0, le=255)]


class ControlOutput(Output, tag="control_output"):
    control: ControlField


class ControlNetNode(Node, tag="controlnet", kw_only=True):
    """A ControlNet guiding the generation with `image` (an edge map, a pose...), at `control_weight`, from
    `begin_step_percent` to `end_step_percent` of the steps. Wire it (or a `collect` of several) into
    `denoise_latents.control`."""

    image: Annotated[ImageField | None, REQUIRED] = None
    control_model: Annotated[ModelIdentifier, model_input("controlnet")]
    control_weight: Annotated[float, msgspec.Meta(ge=-1, le=2)] = 1.0
    begin_step_percent: Fraction = 0.0
    end_step_percent: Fraction = 1.0
    control_mode: ControlMode = "balanced"
    resize_mode: ResizeMode = "just_resize"
    output = ControlOutput
    category = "control"

    def invoke(self, ctx: InvocationContext) -> ControlOutput:
        assert self.image is not None
        ctx.image_dto(self.image.image_name)  # still there
        return ControlOutput(
            control=ControlField(
                image=self.image,
                control_model=self.control_model,
                control_weight=self.control_weight,
                begin_step_percent=self.begin_step_percent,
                end_step_percent=self.end_step_percent,
                control_mode=self.control_mode,
                resize_mode=self.resize_mode,
            )
        )


class CannyImageProcessorNode(ImageOperation, tag="canny_image_processor", kw_only=True):
    """Canny edges (OpenCV): white lines on black, the same size as the image."""

    image: Annotated[ImageField | None, REQUIRED] = None
    low_threshold: Threshold = 100
    high_threshold: Threshold = 200
    category = "control"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        import cv2
        import numpy as np
        from PIL import Image

        assert self.image is not None
        source = ctx.open_image(self.image.image_name).convert("RGB")
        edges = cv2.Canny(np.asarray(source), self.low_threshold, self.high_threshold)
        return self._save(ctx, Image.fromarray(edges, "L"), category="control")
