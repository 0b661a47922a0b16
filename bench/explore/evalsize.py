import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
import sys, json, torch
from fastai.vision.all import *
from recycle_classifier.export import load_model
learn = load_model(sys.argv[1])
dl = learn.dls.test_dl(get_image_files(str(DATA/'valid')), with_labels=True)
def set_size(dl, s):
    for f in dl.after_item.fs:
        if isinstance(f, (RandomResizedCrop, Resize)): f.size = fastuple(s, s)
print(dl.after_item)
for s in map(int, sys.argv[2:]):
    set_size(dl, s)
    with learn.no_bar(): p, y = learn.get_preds(dl=dl)
    print(s, float((p.argmax(1) == y).float().mean()), flush=True)
