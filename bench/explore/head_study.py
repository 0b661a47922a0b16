"""How the default head's last two settings were chosen (issue #13): numpy dropout masks and the square roots of the
features, against other variants, by 5-fold CV on TrashNet's train split only (two splits per variant), with the
seconds per head fit; `_valid` also trains on all of train with 3 seeds and scores valid (reported, never used to
choose). The features come from the feature cache (`recycle-classifier embed ../shared/datasets/trashnet` fills it).
TrashNet: Thung & Yang 2016, MIT license. Rows go to bench/results/head-study.jsonl.

    flock /tmp/rc-cpu.lock .venv/bin/python bench/explore/head_study.py '[{}, {"_tf": "sqrt"}, {"_tf": "sqrt", "_valid": true, "_fs": [2, 3]}]'
"""
import json, sys, time, statistics
from pathlib import Path
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold
from recycle_classifier.train.settings import training_split, FEATURE_DEFAULTS as D
from recycle_classifier.train.head import make_head, head_probs
from recycle_classifier.features.embedder import get_embedder
from recycle_classifier.features.cache import FeatureCache
from recycle_classifier.features.classifier import standardise
from fastai.vision.all import parent_label
torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
root, classes, train, valid = training_split(ROOT.parent/'shared'/'datasets'/'trashnet')
train, valid = [p.path for p in train], [p.path for p in valid]
f, ok, _ = FeatureCache().features(get_embedder(D['bodies']), train + valid, D['views'])
y = np.array([classes.index(parent_label(p)) for p in ok])
vs = set(valid); isv = np.array([p in vs for p in ok])
F0 = (f[~isv], f[isv]); ytr, yva = y[~isv], y[isv]

def fdrop(x, p, rng):
    if p <= 0: return x
    u = np.frombuffer(rng.bytes(2 * x.numel()), np.uint16).reshape(x.shape)
    return x * torch.from_numpy(u >= round(p * 65536)) / (1 - p)

def fit(feats, y, n_classes, hidden=512, in_drop=0.5, drop=0.5, epochs=40, bs=128, lr=2e-3, wd=0.05,
        label_smoothing=0.1, seed=42, fast=True, bf16=False, mixup=0.0, ema=0.0):
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    mean, std = standardise(feats); n, v, d = feats.shape
    x = torch.from_numpy(((feats - mean) / std).reshape(-1, d).astype(np.float32))
    t = torch.as_tensor(np.repeat(np.asarray(y), v), dtype=torch.long)
    head = make_head(d, n_classes, hidden, in_drop, drop)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    steps = (len(x) + bs - 1) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps))
    head.train()
    avg = torch.optim.swa_utils.AveragedModel(head, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema)) if ema else None
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(steps):
            idx = perm[i*bs:(i+1)*bs]; z = x[idx]
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                for layer in head:
                    z = fdrop(z, layer.p, rng) if (fast and isinstance(layer, nn.Dropout)) else layer(z)
                loss = F.cross_entropy(z.float(), t[idx], label_smoothing=label_smoothing)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            if avg: avg.update_parameters(head)
    if avg: head = avg.module
    return head.eval(), mean.astype(np.float32), std.astype(np.float32)

def tf(f, kind):
    return np.sqrt(np.clip(f, 0, None)) if kind == 'sqrt' else f
def cv(ftr, hp, fold_seeds=(0, 1)):
    accs = []
    for fs in fold_seeds:
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=fs).split(ftr, ytr):
            h, m, s = fit(ftr[tr], ytr[tr], len(classes), seed=fs, **hp)
            accs.append(float((head_probs(h, m, s, ftr[te]).argmax(1) == ytr[te]).mean()))
    return accs
def valid_seeds(ftr, fva, hp, seeds=(42, 1, 2)):
    out = []
    for s in seeds:
        h, m, st = fit(ftr, ytr, len(classes), seed=s, **hp)
        out.append(float((head_probs(h, m, st, fva).argmax(1) == yva).mean()))
    return out
for v in json.loads(sys.argv[1]):
    ftr, fva = tf(F0[0], v.get('_tf')), tf(F0[1], v.get('_tf'))
    hp = {k: x for k, x in v.items() if not k.startswith('_')}; t = time.time()
    c = cv(ftr, hp, tuple(v.get('_fs', (0, 1)))); tc = (time.time() - t) / len(c)
    r = dict(variant=v, cv=round(statistics.mean(c), 4), cv_seed0=round(statistics.mean(c[:5]), 4), cv_seed1=round(statistics.mean(c[5:]), 4),
             fit_s=round(tc, 1), valid=valid_seeds(ftr, fva, hp) if v.get('_valid') else None)
    print(json.dumps(r), flush=True)
    open(ROOT/'bench'/'results'/'head-study.jsonl', 'a').write(json.dumps(r) + '\n')
