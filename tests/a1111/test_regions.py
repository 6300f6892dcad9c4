"""A1111's "only masked" box (server/http/a1111/images.py `masked_region`)."""

from __future__ import annotations

from PIL import Image, ImageDraw

from server.http.a1111.images import masked_region


def mask_with(box: tuple[int, int, int, int], size: tuple[int, int] = (200, 100)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def test_the_box_is_the_mask_and_its_padding_grown_to_the_aspect():
    # 20×10 painted, 5 around: 30×20; at 64×64 (square) it grows to 30×30 about its middle.
    assert masked_region(mask_with((50, 40, 69, 49)), 5, 64, 64) == (45, 30, 30, 30)
    # Wide target: the height stays, the width grows.
    assert masked_region(mask_with((50, 40, 69, 49)), 5, 128, 64) == (40, 35, 40, 20)


def test_the_box_stays_inside_the_image():
    # At the left edge the padding is cut, and the growth goes right instead.
    assert masked_region(mask_with((0, 40, 9, 59)), 4, 64, 64) == (0, 36, 28, 28)
    # Taller than the image can hold: cut to the image.
    assert masked_region(mask_with((0, 0, 199, 9)), 0, 64, 64) == (0, 0, 200, 100)


def test_an_empty_mask_has_no_box():
    assert masked_region(Image.new("L", (64, 64), 0), 8, 64, 64) is None
