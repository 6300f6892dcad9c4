"""A cheap look at latents while they denoise: a fixed linear map from the 4 SD latent channels to RGB
(no VAE call), encoded as a small JPEG data URL."""

from __future__ import annotations

import base64
import io
from typing import Any

from server.events import ProgressImage

# SD-1.x/2.x latent channel -> RGB factors, the approximation InvokeAI and others use for previews.
SD1_LATENT_RGB_FACTORS = (
    (0.3444, 0.1385, 0.0670),
    (0.1247, 0.4027, 0.1494),
    (-0.3192, 0.2513, 0.2103),
    (-0.1307, -0.1874, -0.7445),
)


def latents_preview(latents: Any, scale_factor: int = 8, quality: int = 70) -> ProgressImage:
    """`latents` (1×4×h×w, any device) → a JPEG of h×w pixels; width/height are the decoded image's size,
    the size to show the preview at (as InvokeAI reports it)."""
    import torch
    from PIL import Image

    with torch.inference_mode():
        sample = latents[0, :4].detach().to("cpu", torch.float32).permute(1, 2, 0)
        factors = torch.tensor(SD1_LATENT_RGB_FACTORS, dtype=torch.float32)
        rgb = ((sample @ factors + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    image = Image.fromarray(rgb, "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return ProgressImage(
        width=image.width * scale_factor,
        height=image.height * scale_factor,
        dataURL=f"data:image/jpeg;base64,{data}",
    )
