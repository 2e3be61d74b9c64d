"""Vector quantisation of an image: a 16-colour k-means palette, every pixel mapped with ``sqdist.nearest``.

Each pixel is a point in RGB space.  k-means on a random sample of pixels finds
a palette of ``--colors`` colours (the centres); ``sqdist.nearest`` then maps
every pixel to its closest palette colour, in row blocks that fit the working
memory, without building the pixels x colours distance matrix.  The result
stores 4 bits per pixel (for 16 colours) instead of 24.

The default image is synthetic (a sky gradient, a sun and noisy hills, made
with NumPy), so nothing is downloaded; ``--image FILE`` quantises a PNG or JPEG
instead (read with matplotlib, the ``plot`` extra).

Run::

    python examples/quantize_image.py --out quantised.png
    python examples/quantize_image.py --image photo.png --colors 8 --out photo8.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import sqdist


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An RGB image in [0, 1] of shape (height, width, 3): sky gradient, sun, two noisy hills."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    img = np.empty((height, width, 3))
    img[..., 0] = 0.35 + 0.5 * y  # sky: blue at the top, paler towards the horizon
    img[..., 1] = 0.55 + 0.35 * y
    img[..., 2] = 0.95 - 0.1 * y
    sun = (x - 0.75) ** 2 + ((y - 0.25) * height / width) ** 2 < 0.01
    img[sun] = (1.0, 0.85, 0.3)
    for base, amp, freq, colour in [(0.62, 0.08, 3.0, (0.25, 0.5, 0.2)), (0.78, 0.05, 5.0, (0.35, 0.3, 0.15))]:
        hill = y > base + amp * np.sin(2 * np.pi * freq * x)
        img[hill] = colour
        img[hill] += 0.06 * rng.standard_normal((int(hill.sum()), 3))  # texture
    return np.clip(img, 0.0, 1.0)


def fit_palette(img: np.ndarray, n_colors: int, n_sample: int, seed: int) -> np.ndarray:
    """The palette, of shape (n_colors, 3): k-means centres of a random sample of the pixels."""
    pixels = img.reshape(-1, 3).astype(np.float32)
    rng = np.random.default_rng(seed)
    sample = pixels[rng.choice(len(pixels), size=min(n_sample, len(pixels)), replace=False)]
    return sqdist.kmeans(sample, n_colors, random_state=seed).centers  # k-means++ seeding, then Lloyd iterations


def quantise(img: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (per-pixel palette index of shape (H, W), quantised image of shape (H, W, 3))."""
    _, nearest = sqdist.nearest(img.reshape(-1, 3).astype(np.float32), palette)  # (H * W, 1): the closest colour
    index = nearest[:, 0]
    return index.reshape(img.shape[:2]), palette[index].reshape(img.shape)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", help="a PNG or JPEG to quantise (default: a synthetic image)")
    p.add_argument("--size", default="256x384", help="HEIGHTxWIDTH of the synthetic image (default 256x384)")
    p.add_argument("--colors", type=int, default=16, help="palette size (default 16)")
    p.add_argument("--sample", type=int, default=10_000, help="pixels the palette is fitted on (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the pixel sample and k-means++ (default 0)")
    p.add_argument("--out", action="append", default=[],
                   help="write the quantised image here (.png needs matplotlib; .npy always works); may be repeated")
    args = p.parse_args(argv)

    if args.image:
        import matplotlib.image

        img = np.asarray(matplotlib.image.imread(args.image), dtype=np.float64)[..., :3]
        img = img / 255.0 if img.max() > 1.0 else img  # JPEGs are read as 0..255 integers
    else:
        h, w = (int(v) for v in args.size.lower().split("x"))
        img = synthetic_image(h, w, args.seed)

    t0 = time.perf_counter()
    palette = fit_palette(img, args.colors, args.sample, args.seed)
    t1 = time.perf_counter()
    index, out = quantise(img, palette)
    t2 = time.perf_counter()
    mse = float(np.mean((out - img) ** 2))
    print(f"image {img.shape[0]}x{img.shape[1]}, {len(np.unique(img.reshape(-1, 3), axis=0))} distinct colours "
          f"-> {args.colors}-colour palette")
    print(f"k-means on {min(args.sample, index.size)} pixels: {t1 - t0:.2f} s (the first call in a process includes "
          f"one-off kernel compilation); nearest colour of {index.size} pixels: {t2 - t1:.3f} s")
    print(f"mean squared error {mse:.6f} (PSNR {10 * np.log10(1.0 / mse):.1f} dB), "
          f"{np.ceil(np.log2(args.colors)):.0f} bits per pixel instead of 24")
    print("palette (RGB 0-255): " + " ".join("#" + "".join(f"{v:02x}" for v in np.rint(255 * c).astype(int)) for c in palette))
    print(f"pixels per colour: {np.bincount(index.ravel(), minlength=args.colors).tolist()}")
    for path in args.out:
        if path.endswith(".npy"):
            np.save(path, out.astype(np.float32))
        else:
            import matplotlib.image

            matplotlib.image.imsave(path, np.clip(out, 0.0, 1.0))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
