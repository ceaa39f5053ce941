#!/usr/bin/env python3
"""Generates the handwriting-like test set of `lenet` (see README.md next to this file).

Usage: python3 make.py [OUTPUT_DIR]   (needs Pillow; fonts from Debian packages, see README.md)

Every image is one digit, dark ink on light paper, grayscale PNG, named
`<style>_<digit>_<k>.png`. The set is fully determined by the seed below.
"""
import math
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFilter, ImageFont

SEED = 2026
SUPER = 4  # supersampling factor of the pen renderer


def arc(cx, cy, rx, ry, t0, t1, n=40):
    """Points of an elliptic arc, angles in degrees, y pointing down (90° is the bottom)."""
    return [
        (cx + rx * math.cos(math.radians(t0 + (t1 - t0) * i / n)),
         cy + ry * math.sin(math.radians(t0 + (t1 - t0) * i / n)))
        for i in range(n + 1)
    ]


def quad(p0, p1, p2, n=20):
    """Points of a quadratic Bézier curve."""
    out = []
    for i in range(n + 1):
        t = i / n
        out.append(((1 - t) ** 2 * p0[0] + 2 * t * (1 - t) * p1[0] + t * t * p2[0],
                    (1 - t) ** 2 * p0[1] + 2 * t * (1 - t) * p1[1] + t * t * p2[1]))
    return out


def skeleton(digit, r, style):
    """The pen strokes of `digit` in a unit box (x right, y down), with per-sample variation."""
    w = lambda a: a + r.uniform(-0.04, 0.04)  # noqa: E731 - a wobble of a control value
    if digit == 0:
        return [arc(0.5, 0.5, w(0.3) * style["round"], w(0.45), w(-100), 265)]
    if digit == 1:
        strokes = [[(w(0.55), 0.05), (w(0.5), 0.95)]]
        if style["flag"]:
            strokes[0].insert(0, (w(0.33), w(0.22)))
        return strokes
    if digit == 2:
        top = arc(0.5, w(0.3), w(0.26) * style["round"], w(0.23), w(195), w(395))
        return [top + [(w(0.2), 0.95), (w(0.82), w(0.95))]]
    if digit == 3:
        up = arc(0.48, 0.27, w(0.24), w(0.22), w(205), 450)
        low = arc(0.48, 0.71, w(0.28), w(0.24), 270, w(505))
        return [up + low]
    if digit == 4:
        x = w(0.62)
        if style["open4"]:
            return [[(w(0.25), 0.05), (0.15, w(0.62)), (w(0.85), w(0.62))], [(x, 0.25), (x, 0.95)]]
        return [[(x, 0.95), (x, 0.05), (0.15, w(0.65)), (w(0.85), w(0.65))]]
    if digit == 5:
        bowl = arc(0.48, w(0.68), w(0.27), w(0.26), w(215), w(505))
        return [[(w(0.78), 0.05), (0.3, w(0.05)), (w(0.28), bowl[0][1])] + bowl]
    if digit == 6:
        loop = arc(0.5, w(0.7), w(0.26) * style["round"], w(0.24), 180, 540)
        return [quad((w(0.7), 0.05), (w(0.25), w(0.2)), loop[0]) + loop]
    if digit == 7:
        strokes = [[(w(0.15), w(0.07)), (w(0.85), 0.07), (w(0.4), 0.95)]]
        if style["bar7"]:
            strokes.append([(w(0.4), 0.5), (w(0.78), 0.5)])
        return strokes
    if digit == 8:
        up = arc(0.5, w(0.27), w(0.21), w(0.2), 90, 450)
        low = arc(0.5, w(0.7), w(0.27) * style["round"], w(0.25), 270, 630)
        return [up + low]
    if digit == 9:
        loop = arc(0.5, w(0.3), w(0.25) * style["round"], w(0.22), 0, 360)
        return [loop + [(w(0.72), 0.95) if style["straight9"] else (w(0.6), 0.95)]]
    raise ValueError(digit)


# Pen "writers": stroke width (of the digit height), slant (shear), width factor, roundness,
# hand jitter, ink and paper grey levels, blur radius and a few habits.
WRITERS = {
    "neat": dict(width=0.06, slant=0.0, wide=1.0, round=1.0, jitter=0.004, ink=(20, 50),
                 paper=(235, 250), blur=0.4, flag=False, open4=False, bar7=False, straight9=True),
    "marker": dict(width=0.13, slant=0.1, wide=1.1, round=1.1, jitter=0.006, ink=(10, 30),
                   paper=(230, 245), blur=0.6, flag=True, open4=False, bar7=False, straight9=True),
    "italic": dict(width=0.07, slant=0.35, wide=0.8, round=0.9, jitter=0.008, ink=(30, 70),
                   paper=(220, 245), blur=0.5, flag=True, open4=True, bar7=False, straight9=False),
    "pencil": dict(width=0.05, slant=0.1, wide=0.95, round=1.0, jitter=0.01, ink=(80, 120),
                   paper=(225, 240), blur=0.8, flag=False, open4=False, bar7=False, straight9=True),
    "child": dict(width=0.09, slant=-0.1, wide=1.25, round=1.2, jitter=0.02, ink=(20, 60),
                  paper=(235, 250), blur=0.5, flag=False, open4=True, bar7=False, straight9=False),
    "euro": dict(width=0.07, slant=0.15, wide=0.9, round=0.95, jitter=0.008, ink=(20, 60),
                 paper=(215, 240), blur=1.0, flag=True, open4=True, bar7=True, straight9=False),
}

FONTS = {
    "humor": "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "comic": "/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf",
    "comicbold": "/usr/share/fonts/opentype/comic-neue/ComicNeue-BoldItalic.otf",
    "chancery": "/usr/share/fonts/opentype/urw-base35/Z003-MediumItalic.otf",
    "andika": "/usr/share/fonts/truetype/andika/Andika-Italic.ttf",
}


def paper(r, size, style_paper):
    """A light page: a grey level with a gentle lighting gradient and grain, like a photo."""
    lo, hi = style_paper
    base = r.uniform(lo, hi)
    gx, gy = r.uniform(-20, 20), r.uniform(-20, 20)
    img = Image.new("L", (size, size))
    img.putdata([
        int(max(0, min(255, base + gx * (x / size - 0.5) + gy * (y / size - 0.5) + r.gauss(0, 3))))
        for y in range(size) for x in range(size)
    ])
    return img


def pen_digit(r, digit, style):
    size = r.randint(64, 128)
    page = paper(r, size, style["paper"])
    big = size * SUPER
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    height = r.uniform(0.55, 0.8) * big
    width = height * style["wide"] * r.uniform(0.9, 1.1)
    x0 = r.uniform(0.1, 0.9) * (big - width * 0.8) + width * 0.1
    y0 = r.uniform(0.1, 0.9) * (big - height)
    slant = style["slant"] + r.uniform(-0.08, 0.08)
    pen = max(2, int(style["width"] * height * r.uniform(0.8, 1.2)))
    for stroke in skeleton(digit, r, style):
        pts = []
        for x, y in stroke:
            x += r.gauss(0, style["jitter"])
            y += r.gauss(0, style["jitter"])
            # Shear about the middle line: the top leans right for a positive slant.
            pts.append((x0 + (x - 0.5) * width + width / 2 + slant * (0.5 - y) * height,
                        y0 + y * height))
        draw.line(pts, fill=255, width=pen, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    mask = mask.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(style["blur"]))
    ink = Image.new("L", (size, size), int(r.uniform(*style["ink"])))
    return Image.composite(ink, page, mask)


def font_digit(r, digit, path):
    size = r.randint(64, 128)
    page = paper(r, size, (220, 250))
    font = ImageFont.truetype(path, int(size * r.uniform(0.6, 0.85)))
    mask = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(mask).text((size, size), str(digit), fill=255, font=font, anchor="mm")
    mask = mask.rotate(r.uniform(-8, 8), resample=Image.BICUBIC)
    bbox = mask.getbbox()
    glyph = mask.crop(bbox)
    pad_x = max(0, size - glyph.width)
    pad_y = max(0, size - glyph.height)
    placed = Image.new("L", (size, size), 0)
    placed.paste(glyph, (r.randint(0, pad_x), r.randint(0, pad_y)))
    placed = placed.filter(ImageFilter.GaussianBlur(r.uniform(0.3, 0.9)))
    ink = Image.new("L", (size, size), r.randint(10, 70))
    return Image.composite(ink, page, placed)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    r = random.Random(SEED)
    count = 0
    for name, style in WRITERS.items():
        for digit in range(10):
            for k in range(3):
                pen_digit(r, digit, style).save(os.path.join(out, f"{name}_{digit}_{k}.png"), optimize=True)
                count += 1
    for name, path in FONTS.items():
        for digit in range(10):
            for k in range(2):
                font_digit(r, digit, path).save(os.path.join(out, f"{name}_{digit}_{k}.png"), optimize=True)
                count += 1
    print(f"{count} images in {out}")


if __name__ == "__main__":
    main()
