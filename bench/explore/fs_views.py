"Cache EfficientNet-Lite0 embeddings of other views of every TrashNet photo (centre crops, larger sizes) for few-shot experiments."
import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
import sys, time, numpy as np, torch
sys.path.insert(0, str(ROOT/'bench'))
from bench_fewshot import embedder
from recycle_classifier.core import open_image, image_files
torch.set_num_threads(2)
fs = image_files(DATA/'train') + image_files(DATA/'valid')
ims = [open_image(f) for f in fs]
def crop(im, frac):
    w, h = im.size; cw, ch = w * frac, h * frac
    return im.crop((int((w - cw) / 2), int((h - ch) / 2), int((w + cw) / 2), int((h + ch) / 2)))
for view in sys.argv[1:]:   # e.g. lite0@320:0.7  (size, centre-crop fraction)
    spec, _, frac = view.partition(':'); arch, size = spec.partition('@')[::2]
    emb = embedder(spec); frac = float(frac or 1)
    t = time.time(); X = emb.embed([crop(im, frac) for im in ims]).numpy()
    print(view, round(time.time() - t), 's', X.shape, flush=True)
    np.save(f'/tmp/fs/view_{arch}_{size}_{frac}.npy', X)
