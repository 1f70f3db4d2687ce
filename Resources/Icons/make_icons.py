"""Draw the extension and module icons (128x128 PNG): ``python Resources/Icons/make_icons.py``.

Extension icon: an axial CT slice with two lungs and a red AI contour. RTDeepSeg: yellow reference
and red AI contours of one organ. RTPneumonitisPredictor: a lung with a dose wash >= 20 Gy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128


def _body(draw: ImageDraw.ImageDraw) -> None:
    draw.rounded_rectangle(
        (6, 22, 122, 106), radius=38, fill=(150, 150, 150, 255), outline=(220, 220, 220, 255), width=3
    )


def extension_icon() -> Image.Image:
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    _body(draw)
    draw.ellipse((20, 34, 58, 94), fill=(30, 30, 30, 255))
    draw.ellipse((70, 34, 108, 94), fill=(30, 30, 30, 255))
    draw.ellipse((17, 31, 61, 97), outline=(230, 40, 40, 255), width=4)
    draw.rectangle((58, 80, 70, 92), fill=(240, 240, 240, 255))
    return image


def segmentation_icon() -> Image.Image:
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    _body(draw)
    draw.ellipse((34, 36, 94, 96), fill=(90, 90, 90, 255))
    draw.ellipse((32, 34, 96, 98), outline=(250, 220, 0, 255), width=5)
    draw.ellipse((40, 40, 92, 94), outline=(230, 30, 30, 255), width=5)
    return image


def pneumonitis_icon() -> Image.Image:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    dose = np.clip(1.0 - np.hypot(xx - 78, yy - 64) / 60.0, 0.0, 1.0)
    wash = np.zeros((SIZE, SIZE, 4), np.uint8)
    wash[..., 0] = 255
    wash[..., 1] = (200 * (1 - dose)).astype(np.uint8)
    wash[..., 3] = np.where(dose > 0.45, 170, 0).astype(np.uint8)
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    _body(draw)
    draw.ellipse((24, 32, 62, 96), fill=(30, 30, 30, 255))
    draw.ellipse((66, 32, 104, 96), fill=(30, 30, 30, 255))
    image.alpha_composite(Image.fromarray(wash, "RGBA"))
    draw = ImageDraw.Draw(image)
    draw.ellipse((66, 32, 104, 96), outline=(40, 170, 255, 255), width=3)
    return image


def main() -> None:
    targets = {
        ROOT / "Resources" / "Icons" / "RTDeep.png": extension_icon,
        ROOT / "RTDeepSeg" / "Resources" / "Icons" / "RTDeepSeg.png": segmentation_icon,
        ROOT
        / "RTPneumonitisPredictor"
        / "Resources"
        / "Icons"
        / "RTPneumonitisPredictor.png": pneumonitis_icon,
    }
    for path, draw in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        draw().save(path)
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
