"""Small image files in the forms people's photo collections come in, written by encoders other
than dtl's (Pillow, and tifffile for 16-bit colour TIFF), with the pixels Pillow decodes from each
as the reference: crates/dtl-data/tests/fixtures/images/ and its expected.json, read by
crates/dtl-data/tests/image_formats.rs.

    python3 -m venv venv && venv/bin/pip install pillow==13.0.0 numpy tifffile
    venv/bin/python scripts/make_image_fixtures.py

Every picture is the same 24x16 (width x height) pattern of six 8x8 blocks of different colours,
so that JPEG's 8x8 transform reproduces each block's colour nearly exactly and any rotation or
mirror of the picture is visible. Files that store the picture turned (EXIF orientation) store
it so that applying their orientation gives the pattern back.
"""
import io
import json
import os
import sys

import numpy as np
import tifffile
from PIL import Image, ImageOps

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "dtl-data", "tests", "fixtures", "images")
COLOURS = [
    [(230, 30, 30), (30, 200, 40), (20, 40, 220)],
    [(250, 250, 250), (10, 10, 10), (240, 200, 20)],
]


def pattern():
    a = np.zeros((16, 24, 3), np.uint8)
    for r, row in enumerate(COLOURS):
        for c, col in enumerate(row):
            a[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = col
    return a


def exif_with_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def main():
    os.makedirs(OUT, exist_ok=True)
    rgb = Image.fromarray(pattern(), "RGB")
    files = {}

    # 8-bit palette TIFF (Photometric RGBPalette), as some expression data sets ship.
    rgb.quantize(colors=6, method=Image.Quantize.MEDIANCUT).save(f"{OUT}/palette.tif")
    files["palette.tif"] = "8-bit palette TIFF"
    # The same palette TIFF big-endian (`MM`), written by tifffile.
    pal = rgb.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    lut = np.zeros((3, 256), np.uint16)
    p = np.asarray(pal.getpalette()[:768], np.uint16).reshape(-1, 3)
    lut[:, :len(p)] = p.T * 257
    tifffile.imwrite(f"{OUT}/palette-be.tif", np.asarray(pal, np.uint8), photometric="palette",
                     colormap=lut, byteorder=">")
    files["palette-be.tif"] = "8-bit palette TIFF, big-endian"
    # 16-bit grayscale TIFF.
    gray16 = (np.asarray(rgb.convert("L"), np.uint16) * 257)
    Image.fromarray(gray16).save(f"{OUT}/gray16.tif")
    files["gray16.tif"] = "16-bit grayscale TIFF"
    # 16-bit RGB TIFF (tifffile: Pillow cannot write it).
    tifffile.imwrite(f"{OUT}/rgb16.tif", pattern().astype(np.uint16) * 257, photometric="rgb")
    files["rgb16.tif"] = "16-bit RGB TIFF"
    # Multi-page TIFF: the pattern first, its negative second; a reader takes the first page.
    neg = Image.fromarray(255 - pattern(), "RGB")
    rgb.save(f"{OUT}/multipage.tif", save_all=True, append_images=[neg])
    files["multipage.tif"] = "two-page TIFF (first page read)"
    # CMYK JPEG (Adobe APP14, inverted, as Photoshop writes it), 4:4:4.
    rgb.convert("CMYK").save(f"{OUT}/cmyk.jpg", quality=95, subsampling=0)
    files["cmyk.jpg"] = "CMYK JPEG"
    # Progressive JPEG.
    rgb.save(f"{OUT}/progressive.jpg", quality=95, subsampling=0, progressive=True)
    files["progressive.jpg"] = "progressive JPEG"
    # EXIF orientation 6 (the camera was turned: rotate 90 degrees clockwise to display): the
    # stored picture is the pattern turned 90 degrees counter-clockwise.
    rgb.transpose(Image.Transpose.ROTATE_90).save(
        f"{OUT}/exif-rotate90.jpg", quality=95, subsampling=0, exif=exif_with_orientation(6))
    files["exif-rotate90.jpg"] = "JPEG with EXIF orientation 6"
    # EXIF orientation 2 (mirrored) in a PNG's eXIf chunk.
    rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        f"{OUT}/exif-mirror.png", exif=exif_with_orientation(2))
    files["exif-mirror.png"] = "PNG with EXIF orientation 2"
    # Grayscale with alpha.
    la = rgb.convert("L").convert("LA")
    la.putalpha(128)
    la.save(f"{OUT}/gray-alpha.png")
    files["gray-alpha.png"] = "grayscale + alpha PNG"
    # Palette PNG.
    rgb.quantize(colors=6, method=Image.Quantize.MEDIANCUT).save(f"{OUT}/palette.png")
    files["palette.png"] = "palette PNG"

    expected = {"pattern": pattern().tolist(), "files": {}}
    for name, what in files.items():
        with Image.open(f"{OUT}/{name}") as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode == "I;16":
                # Pillow's 8-bit view of 16-bit gray: the high byte.
                a = (np.asarray(im, np.uint16) >> 8).astype(np.uint8)
                im = Image.fromarray(a, "L")
            decoded = np.asarray(im.convert("RGB"), np.uint8)
        expected["files"][name] = {"what": what, "rgb": decoded.tolist()}
    with open(f"{OUT}/expected.json", "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(files)} files and expected.json to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
