"""Every node type, one module per family. The registry (server/graph/registry.py) builds the graph payload
union and the `/api/v1/nodes/` catalogue from NODE_CLASSES."""

from server.graph.nodes.adapters import ClipSkipNode, LoraLoaderNode, SDXLLoraLoaderNode, VaeLoaderNode
from server.graph.nodes.base import Node, Output
from server.graph.nodes.conditioning import CompelNode, ConditioningScheduleNode
from server.graph.nodes.control import CannyImageProcessorNode, ControlNetNode
from server.graph.nodes.denoising import DenoiseLatentsNode, TextToLatentsNode
from server.graph.nodes.image import (
    ImageBlurNode,
    ImageConvertNode,
    ImageCropNode,
    ImageNode,
    ImagePasteNode,
    ImageResizeNode,
)
from server.graph.nodes.latents import ImageToLatentsNode, LatentsToImageNode, NoiseNode
from server.graph.nodes.mask import CreateDenoiseMaskNode, ImagePadNode, MaskFromAlphaNode
from server.graph.nodes.metadata import MetadataAccumulatorNode
from server.graph.nodes.model import MainModelLoaderNode, SeamlessNode
from server.graph.nodes.primitives import (
    BooleanNode,
    CollectNode,
    FloatNode,
    IntegerNode,
    IterateNode,
    RandomIntNode,
    RangeNode,
    StringNode,
)
from server.graph.nodes.sdxl import (
    SDXLCompelPromptNode,
    SDXLModelLoaderNode,
    SDXLRefinerCompelPromptNode,
    SDXLRefinerModelLoaderNode,
)
from server.graph.nodes.upscale import ESRGANNode, LatentsResizeNode, LatentsScaleNode

NODE_CLASSES: tuple[type[Node], ...] = (
    IntegerNode,
    FloatNode,
    StringNode,
    BooleanNode,
    RandomIntNode,
    RangeNode,
    IterateNode,
    CollectNode,
    ImageNode,
    MainModelLoaderNode,
    SeamlessNode,
    LoraLoaderNode,
    SDXLLoraLoaderNode,
    VaeLoaderNode,
    ClipSkipNode,
    CompelNode,
    ConditioningScheduleNode,
    SDXLModelLoaderNode,
    SDXLRefinerModelLoaderNode,
    SDXLCompelPromptNode,
    SDXLRefinerCompelPromptNode,
    NoiseNode,
    DenoiseLatentsNode,
    TextToLatentsNode,
    LatentsToImageNode,
    ImageToLatentsNode,
    MetadataAccumulatorNode,
    ImageResizeNode,
    ImageCropNode,
    ImagePasteNode,
    ImageBlurNode,
    ImageConvertNode,
    ImagePadNode,
    MaskFromAlphaNode,
    CreateDenoiseMaskNode,
    ControlNetNode,
    CannyImageProcessorNode,
    ESRGANNode,
    LatentsResizeNode,
    LatentsScaleNode,
)

__all__ = ["NODE_CLASSES", "Node", "Output"]
