"""results/twin_gallery.png: one twin image per finding, with the box (or mask) it was drawn in.

    python -m benchmarks.gallery --out results/twin_gallery.png [--size 512] [--difficulty 0.5]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_modules.twin.findings import RENDERERS  # noqa: E402
from data_modules.twin.nih import read_boxes  # noqa: E402
from data_modules.twin.render import ImageJob, Site, render  # noqa: E402
from data_modules.twin.siim import group_rows  # noqa: E402
from data_modules.twin.sources import read_csv_lines  # noqa: E402
from data_modules.twin.covidx import SOURCES  # noqa: E402


def panels(size: int, difficulty: float):
    _, boxes = read_boxes()
    real_box = {}
    for name, items in boxes.items():
        for label, x, y, w, h in items:
            real_box.setdefault(label, (name, x, y, w, h))
    s = size / 1024
    yield "No Finding", ImageJob("", size, size, [], difficulty=difficulty), None
    for finding in ["Cardiomegaly", *sorted(RENDERERS)]:
        boxes_ = {}
        key = "Infiltrate" if finding == "Infiltration" else finding
        if key in real_box:
            _, x, y, w, h = real_box[key]
            boxes_ = {finding: [(x * s, y * s, (x + w) * s, (y + h) * s)]}
        title = finding + (" (real NIH box)" if boxes_ else "")
        yield title, ImageJob("", size, size, [finding], boxes=boxes_, difficulty=difficulty,
                              image_seed=(7, len(title))), None
    _, lines = read_csv_lines("siim")
    rles = next(v for v in group_rows(lines).values() if v[0] != "-1" and len(v) > 1)
    yield "SIIM pneumothorax (real mask)", ImageJob("", size, size, [], mask=tuple(rles), difficulty=difficulty), rles
    for src in ("bimcv", "cohen"):
        yield f"COVIDx site '{src}'", ImageJob("", size, size, ["COVID-19"], site=SOURCES[src][-1],
                                                 difficulty=difficulty, image_seed=(3,)), None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/twin_gallery.png")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--difficulty", type=float, default=0.5)
    args = ap.parse_args(argv)
    items = list(panels(args.size, args.difficulty))
    cols = 6
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 3.4))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, job, rles) in zip(axes.ravel(), items):
        img, chest, drawn = render(job)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        for name, bxs in drawn.items():
            for x0, y0, x1, y1 in bxs:
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1))
        if rles:
            from PIL import Image

            from data_modules.rle import decode_union

            m = np.asarray(Image.fromarray(decode_union(rles)).resize(img.shape[::-1], Image.NEAREST))
            ax.contour(m, levels=[0.5], colors="lime", linewidths=0.8)
        ax.contour(chest.lungs > 0, levels=[0.5], colors="tab:blue", linewidths=0.4, alpha=0.6)
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"cxrbench twin: synthetic pixels at real annotations (difficulty {args.difficulty}); "
                 "green = box/mask drawn in, blue = real lung-mask outline", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
