"train MNv2 like the bench, then validate at several sizes"
import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
RESULTS = ROOT/'bench'/'results'/'explore.jsonl'
import sys, time, json, torch
from fastai.vision.all import *
from recycle_classifier.train import train
from recycle_classifier.export import load_model
size = int(sys.argv[1]); epochs = int(sys.argv[2])
t = time.time()
learn, m = train(str(DATA), arch='mobilenet_v2', size=size, epochs=epochs, out=f'/tmp/mnv2_{size}_{epochs}.pkl', verbose=False)
tt = time.time() - t
print('trained', size, epochs, m['accuracy'], round(tt), flush=True)
def set_size(dl, s):
    for f in dl.after_item.fs:
        if isinstance(f, (RandomResizedCrop, Resize)): f.size = fastuple(s, s)
for s in sorted({size, 320}):
    set_size(learn.dls.valid, s)
    t = time.time(); p, y = learn.get_preds(dl=learn.dls.valid)
    r = dict(train_size=size, epochs=epochs, eval_size=s, acc=float((p.argmax(1)==y).float().mean()), eval_s=round(time.time()-t,1), train_s=round(tt))
    print(json.dumps(r), flush=True); open(RESULTS, 'a').write(json.dumps(r)+'\n')
