"""How fast is the Shapes world generated? (The book promises 5,000 images in a few seconds.)

Prints the time to generate ``--n`` images (pixels, masks, captions) and to wrap them as a split,
then one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import time

from sat_core.data.shapes import ShapesConfig, generate_shapes, make_split


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=5000, help="number of images (default 5000)")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = p.parse_args(argv)

    cfg = ShapesConfig(image_size=args.image_size)
    t0 = time.perf_counter()
    images = generate_shapes(args.n, args.seed, cfg, progress=True)
    t1 = time.perf_counter()
    split = make_split("train", images)
    t2 = time.perf_counter()
    n_obj = sum(len(im.objects) for im in images)
    print(f"generated {args.n} images ({n_obj} objects, {split.num_captions} captions) "
          f"of {args.image_size}x{args.image_size} in {t1 - t0:.2f} s; split in {t2 - t1:.2f} s")
    print(json.dumps({"n_images": args.n, "generate_s": round(t1 - t0, 3),
                      "images_per_s": round(args.n / (t1 - t0), 1),
                      "make_split_s": round(t2 - t1, 3)}))


if __name__ == "__main__":
    main()
