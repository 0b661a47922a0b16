"Cache per-stage pooled features (mean and std over space) of every TrashNet photo, for few-shot experiments."
import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
import sys, time, numpy as np, torch
from PIL import ImageOps
sys.path.insert(0, str(ROOT/'bench'))
from bench_fewshot import embedder
from recycle_classifier.core import open_image, image_files
torch.set_num_threads(2)
fs = image_files(DATA/'train') + image_files(DATA/'valid')
ims = [open_image(f) for f in fs]; y = np.array([f.parent.name for f in fs])
for arch in sys.argv[1:]:
    name = arch.partition('@')[0]
    emb = embedder(arch)
    mods = list(emb.body.children())
    if len(mods) < 6: mods = list(mods[0].children())  # mobilenet_v2: body = Sequential(features)
    feats = {}
    def hook(i):
        def f(m, inp, out):
            x = out.float(); feats.setdefault(i, []).append(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1))
        return f
    hs = [m.register_forward_hook(hook(i)) for i, m in enumerate(mods)]
    t = time.time()
    with torch.no_grad():
        for flip in (False, True):
            for i in range(0, len(ims), 32):
                batch = [ImageOps.mirror(im) if flip else im for im in ims[i:i+32]]
                x = torch.stack([emb.preprocess(im) for im in batch]).contiguous(memory_format=torch.channels_last)
                emb.body(x)
    for h in hs: h.remove()
    out = {f'L{i}': torch.cat(v).numpy().astype(np.float16) for i, v in feats.items()}
    print(arch, 'embed', round(time.time() - t), 's', {k: v.shape for k, v in out.items()}, flush=True)
    np.savez(f'/tmp/fs/layers_{name}_{emb.size}.npz', y=y, n=len(ims), **out)
