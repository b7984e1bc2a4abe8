"""Owns opening one image right: the one way an image folder's reader (`nas.data.readers`), its
header count (`nas.data.counting`) and `nas predict` (`nas.run.inference`) turn a file or a PIL
image into RGB pixels, so an image predicted gets the numbers it got in training.

Claims:
- `read_rgb(source, size)` is RGB uint8 (size, size, 3): EXIF orientation applied
  (`PIL.ImageOps.exif_transpose`); 16-bit greyscale (modes I;16*, and I, which is how PIL gives
  16-bit PNG and TIFF) scaled to 8 bits by 255/65535, rounded (65535 -> 255, 32768 -> 128), not
  clipped; palette and transparency (P or L with a transparent colour, PA, LA, RGBA) flattened
  onto `BACKGROUND`, so a transparent pixel is white whatever colour it hides; then plainly
  resized (PIL bilinear, aspect ratio not kept) to a square.
- A file whose header claims more pixels than PIL's decompression-bomb limit
  (`PIL.Image.MAX_IMAGE_PIXELS`) is refused before a pixel is decoded, by name; it and every
  other file that cannot be read are a `DataError` of one sentence naming the file and why.
- `header_size(path)` reads the (width, height) a file claims without decoding it, with the same
  refusals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from nas.errors import DataError

BACKGROUND = (255, 255, 255)  # what transparent pixels are flattened onto (deterministic)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# What PIL raises on a file it cannot read: UnidentifiedImageError and truncation are OSErrors;
# a broken chunk can surface as SyntaxError, EOFError or ValueError; a bomb is its own class.
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_rgb(source: str | Path | Image.Image, size: int) -> np.ndarray:
    """`source` (a file or a PIL image) as RGB uint8 (size, size, 3); DataError naming a file
    that cannot be read."""
    if isinstance(source, Image.Image):
        return _square(as_rgb(source), size)
    with opened(Path(source)) as image:
        return _square(as_rgb(image), size)


def header_size(path: Path) -> tuple[int, int]:
    """The (width, height) `path` claims, nothing decoded; DataError as `read_rgb`."""
    with opened(path) as image:
        return image.size


@contextmanager
def opened(path: Path) -> Iterator[Image.Image]:
    """`path` opened lazily by PIL, refused by name when its header claims a bomb's size; any
    reading error inside the block becomes a DataError naming the file."""
    try:
        with Image.open(path) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                raise Image.DecompressionBombError(
                    f"its header claims {image.width}x{image.height} pixels, more than PIL's "
                    f"limit of {limit}"
                )
            yield image
    except Image.DecompressionBombError as error:
        raise DataError(
            f"{path} was refused as a decompression bomb ({error}): remove it"
        ) from None
    except READ_ERRORS as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise DataError(f"{path} could not be read as an image ({reason}): fix or remove it") from (
            None
        )


def as_rgb(image: Image.Image) -> Image.Image:
    """`image` upright, in RGB, 16-bit scaled and transparency flattened (see the module)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(np.rint(values * (255 / 65535)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        image = image.convert("RGBA")  # PIL's route for palette and colour-key transparency
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _square(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
