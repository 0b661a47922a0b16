"""Rebuild `recycle_classifier/resources/trashnet-sample` from TrashNet: a seeded, class-balanced subset, resized to at most 256 px."""
import random, shutil, sys
from pathlib import Path
from PIL import Image

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else '../shared/datasets/trashnet')
DEST = Path(sys.argv[2] if len(sys.argv) > 2 else 'recycle_classifier/resources/trashnet-sample')
PER_SPLIT, MAX_SIDE = {'train': 30, 'valid': 10}, 256

rng = random.Random(2016)
for split, n in PER_SPLIT.items():
    for cls_dir in sorted((SRC/split).iterdir()):
        files = sorted(cls_dir.glob('*.jpg'))
        for f in sorted(rng.sample(files, n)):
            out = DEST/split/cls_dir.name/f.name
            out.parent.mkdir(parents=True, exist_ok=True)
            im = Image.open(f); im.thumbnail((MAX_SIDE, MAX_SIDE))
            im.save(out, quality=90)
shutil.copy(SRC/'LICENSE', DEST/'LICENSE')
