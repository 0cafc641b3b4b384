"""Every model on MVTec-style folders of real photographs: image and pixel AUROC, fit time, latency.

    .venv/bin/python benchmarks/real_images.py --make data/photo_textures   # build the folder, then run
    .venv/bin/python benchmarks/real_images.py --root /path/to/mvtec/carpet  # any MVTec-style folder(s)

``--make DIR`` writes ``lib.dataset.photo_textures`` (crops of scikit-image's ``cell`` and
``retina`` photographs with pasted patches of other real photographs, scratches and smudges; none
of them is a model's training aid) and runs on its categories. ``--root`` takes one category folder
or a folder of categories. Each category goes through ``import_mvtec`` (test images split evenly,
seeded, into validation and test); models train on ``train/good`` at ``--size`` with the quick
profile's settings and are scored on validation + test. Run it with the anomalib environment's
python (``benchmarks/setup_anomalib_env.sh``) to add anomalib's PatchcoreModel on the same arrays
and weights; otherwise that row says "not in this environment".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `lib` also from the anomalib environment
from lib.config import load_profile  # noqa: E402
from lib.dataset.mvtec import import_mvtec  # noqa: E402
from lib.dataset.photo_textures import make_photo_texture_folder  # noqa: E402
from lib.evaluate import metrics as M  # noqa: E402
from lib.models import make_model  # noqa: E402
from lib.models.data import load_images

#: quick-profile budgets, at the benchmark's input size
SETTINGS = {
    "patchcore": {},
    "simplenet": {},
    "memseg": {},
    "efficientad_s": {},
}


def categories(root: Path) -> list[Path]:
    if (root / "train" / "good").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "train" / "good").is_dir())
    if not found:
        raise SystemExit(f"{root}: no MVTec-style folder (train/good) in it or under it")
    return found


def evaluate(model_fn, train, images, y, masks, fit=True):
    t0 = time.perf_counter()
    if fit:
        model_fn.fit(train, train[:2])
    fit_s = time.perf_counter() - t0
    scores, maps, times = [], [], []
    model_fn.predict(images[:1])  # warm-up
    for i in range(len(images)):
        t0 = time.perf_counter()
        s, m = model_fn.predict(images[i : i + 1])
        times.append((time.perf_counter() - t0) * 1000)
        scores.append(float(s[0]))
        maps.append(m[0])
    h, w = masks[0].shape
    big = [cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps]
    return M.roc_auc(y, scores), M.PixelScores(masks, big).auroc(), fit_s, float(np.median(times))


def anomalib_patchcore(train, images, y, size):
    """anomalib 2.x PatchcoreModel on the same arrays and offline weights (only in its environment)."""
    try:
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError:
        return None
    from lib.models.backbones import FeatureExtractor

    backbone = "tf_efficientnet_lite0"
    fe = FeatureExtractor(backbone, ("layer2", "layer3"))
    ano = PatchcoreModel(
        layers=list(fe.model.feature_info.module_name()), backbone=backbone, pre_trained=False
    )
    loaded = ano.feature_extractor.feature_extractor.load_state_dict(fe.model.state_dict(), strict=False)
    if loaded.missing_keys:  # a partly random backbone would make the comparison meaningless
        raise RuntimeError(
            f"anomalib's backbone did not take our weights: {len(loaded.missing_keys)} missing keys, "
            f"e.g. {loaded.missing_keys[:3]}"
        )

    def tensor(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).flip(-1).permute(0, 3, 1, 2).float() / 255.0
        return (t - fe.mean) / fe.std

    t0 = time.perf_counter()
    ano.train()
    with torch.no_grad():
        for i in range(0, len(train), 4):
            ano(tensor(train[i : i + 4]))
        ano.subsample_embedding(sampling_ratio=0.05)
    fit_s = time.perf_counter() - t0
    ano.eval()
    times, scores = [], []
    with torch.no_grad():
        for i in range(len(images)):
            t0 = time.perf_counter()
            scores.append(float(ano(tensor(images[i : i + 1])).pred_score.flatten()[0]))
            times.append((time.perf_counter() - t0) * 1000)
    return M.roc_auc(y, scores), fit_s, float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--root", type=Path, help="an MVTec-style category folder, or a folder of them")
    group.add_argument("--make", type=Path, help="build the photo-texture folder here, then run on it")
    ap.add_argument("--models", default=",".join(SETTINGS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root
    if args.make:
        make_photo_texture_folder(args.make)
        root = args.make
    prof = load_profile("quick")
    size = (args.size, args.size)
    print(f"models at {size[0]}x{size[1]}, quick-profile settings, {args.threads} thread(s), batch 1")
    print(
        f"{'category':<10} {'model':<22} {'image AUROC':>11} {'pixel AUROC':>11} {'fit s':>7} {'ms/image':>9}"
    )
    for cat in categories(root):
        man = import_mvtec(cat, viewpoint=cat.name)
        train_rows = man[man.split == "train"]
        rows = man[man.split != "train"]
        y = (rows.label == "anomalous").to_numpy()
        train = load_images(cat, train_rows, size, masked=False)
        images = load_images(cat, rows, size, masked=False)
        first = cv2.imread(str(cat / rows.image_path.iloc[0]), cv2.IMREAD_GRAYSCALE)
        masks = [
            cv2.imread(str(cat / p), cv2.IMREAD_GRAYSCALE) if p else np.zeros(first.shape, np.uint8)
            for p in rows.mask_path
        ]
        for name in args.models.split(","):
            model = make_model(name, prof, input_size=size, **SETTINGS.get(name, {}))
            img, px, fit_s, ms = evaluate(model, train, images, y, masks)
            print(f"{cat.name:<10} {name:<22} {img:11.3f} {px:11.3f} {fit_s:7.1f} {ms:9.1f}", flush=True)
        ref = anomalib_patchcore(train, images, y, size)
        if ref is None:
            print(f"{cat.name:<10} {'anomalib PatchcoreModel':<22} {'not in this environment':>41}")
        else:
            print(
                f"{cat.name:<10} {'anomalib PatchcoreModel':<22} {ref[0]:11.3f} {'-':>11} {ref[1]:7.1f} {ref[2]:9.1f}"
            )


if __name__ == "__main__":
    main()
