import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
import sys, time, numpy as np, torch
from pathlib import Path
from PIL import ImageOps
sys.path.insert(0, str(ROOT/'bench'))
from bench_fewshot import embedder
from recycle_classifier.core import open_image, image_files
torch.set_num_threads(2)
D = Path(str(DATA))
fs = image_files(D/'train') + image_files(D/'valid')
ims = [open_image(f) for f in fs]; y = np.array([f.parent.name for f in fs])
for arch in sys.argv[1:]:
    name = arch.partition('@')[0]
    emb = embedder(arch)
    body = emb.body.to(memory_format=torch.channels_last)
    t = time.time()
    with torch.no_grad():
        def run(imgs):
            out = []
            for i in range(0, len(imgs), 32):
                x = torch.stack([emb.preprocess(im) for im in imgs[i:i+32]]).contiguous(memory_format=torch.channels_last)
                out.append(body(x).mean((2, 3)))
            return torch.cat(out).numpy()
        X = run(ims); Xf = run([ImageOps.mirror(im) for im in ims])
    print(arch, 'embed', round(time.time() - t), 's', flush=True)
    np.savez(f'/tmp/emb_{name}_{emb.size}.npz', X=X, Xf=Xf, y=y)
