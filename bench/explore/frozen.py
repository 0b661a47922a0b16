"frozen Lite0 body (BN in eval), train only the head with fastai, N epochs at SIZE; `squish`: whole photo resized, no crops"
import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
RESULTS = ROOT/'bench'/'results'/'explore.jsonl'
import sys, time, json, torch, torch.nn as nn
from fastai.vision.all import *
from recycle_classifier.data import get_dls, scan_dataset
from recycle_classifier.train import FastCPUBatches
from recycle_classifier.backbones import efficientnet_lite, LITE_STATS
arch, size, epochs, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def lite(weights=None, pretrained=True):
    return efficientnet_lite(int(arch[-1]), pretrained)
scan = scan_dataset(str(DATA))
set_seed(42, reproducible=True)
squish = 'squish' in sys.argv[5:]
dls = get_dls(scan.root, size=size, bs=32, seed=42, num_workers=2, verbose=False, scan=scan, squish=squish)
model_meta[lite] = {'cut': -3, 'split': default_split, 'stats': LITE_STATS}
learn = vision_learner(dls, lite, pretrained=True, custom_head=create_head(1280, dls.c), metrics=accuracy,
                       cbs=[FastCPUBatches(), BnFreeze()], train_bn=False, loss_func=CrossEntropyLossFlat())
learn.freeze()
for p in learn.model[0].parameters(): p.requires_grad_(False)
t = time.time()
learn.fit_one_cycle(epochs, lr)
acc = float(learn.validate()[1]); tt = time.time() - t
r = dict(mode='frozen' + ('-squish' if squish else ''), arch=arch, size=size, epochs=epochs, lr=lr, acc=acc, train_s=round(tt))
print(json.dumps(r), flush=True)
open(RESULTS, 'a').write(json.dumps(r) + '\n')
