"experiment: fine-tune on full trashnet; args: arch size epochs freeze lr [extra]"
import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
RESULTS = ROOT/'bench'/'results'/'explore.jsonl'
import sys, time, json, torch, torch.nn as nn
from fastai.vision.all import *
from recycle_classifier.data import get_dls, scan_dataset
from recycle_classifier.train import FastCPUBatches
from recycle_classifier.backbones import ARCHS, fetch_weights
from recycle_classifier.backbones import efficientnet_lite, LITE_STATS
arch, size, epochs, freeze, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
extra = sys.argv[6:]
def lite(weights=None, pretrained=True):
    return efficientnet_lite(int(arch[-1]), pretrained)
scan = scan_dataset(str(DATA))
set_seed(42, reproducible=True)
dls = get_dls(scan.root, size=size, bs=32, seed=42, num_workers=2, verbose=False, scan=scan)
kw = {}
if 'ls' in extra: kw['loss_func'] = LabelSmoothingCrossEntropyFlat()
else: kw['loss_func'] = CrossEntropyLossFlat()
if arch.startswith('efficientnet'):
    model_meta[lite] = {'cut': -3, 'split': default_split, 'stats': LITE_STATS}
    learn = vision_learner(dls, lite, pretrained=True, custom_head=create_head(1280, dls.c), metrics=accuracy, cbs=FastCPUBatches(), **kw)
else:
    b = ARCHS[arch]; fetch_weights(b.weights)
    learn = vision_learner(dls, b.arch, weights=b.weights, metrics=accuracy, cbs=FastCPUBatches(), **kw)
t = time.time()
with learn.no_bar():
    learn.fine_tune(epochs, base_lr=lr, freeze_epochs=freeze)
acc = float(learn.validate()[1]); tt = time.time() - t
r = dict(arch=arch, size=size, epochs=epochs, freeze=freeze, lr=lr, extra=extra, acc=acc, train_s=round(tt))
if 'tta' in extra:
    p, y = learn.tta(); r['tta_acc'] = float((p.argmax(1) == y).float().mean()); r['tta_s'] = round(time.time() - t - tt)
print(json.dumps(r), flush=True)
open(RESULTS, 'a').write(json.dumps(r) + '\n')
