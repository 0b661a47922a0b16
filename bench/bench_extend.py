"""Leave-one-class-out benchmark of extending a trained model with a new class from K photos (issue #15).

For each of TrashNet's 6 classes: a base model (the default recipe's head on cached frozen features) is trained
on the other 5 classes (train split); the held-out class is added from K = 1, 5, 10, 20 of its train photos
(20 random draws each); everything is scored on the valid split: novel-class recall, base-class accuracy (and
its drop against the 5-class model), overall accuracy on all 6 classes, and the false-novel rate (base photos
called the new class). Methods: the extension methods of `recycle_classifier.fewshot` (chosen by this table), the
plain prototype model (every class a prototype of frozen features; base classes from all their train photos),
and a full re-train of the head with the K photos (class-weighted) as the reference.

Features come from the package's FeatureCache (computed once, shared with the other stages and benchmarks).
Results: bench/results/extend.jsonl (one row per method, K, held-out class and draw summary) and
bench/results/extend.md (the table). Data: TrashNet (Thung & Yang 2016, MIT license), train and valid splits.

Usage: flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_extend.py [--features-only] [--draws 20]
       [--methods imprint,...] [--timing]
"""
import argparse, json, math, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from recycle_classifier.embed import FeatureCache, get_embedder  # noqa: E402
from recycle_classifier.layout import walk_dataset  # noqa: E402
from recycle_classifier import fewshot  # noqa: E402

TRASHNET = Path(os.environ.get('TRASHNET', ROOT.parent/'shared'/'datasets'/'trashnet'))
SPEC = os.environ.get('EXTEND_BENCH_SPEC', 'efficientnet_lite0@384+mobilenet_v2@320')
VIEWS = ('orig', 'flip')
OUT = ROOT/'bench'/'results'

def log(*a): print(*a, file=sys.stderr, flush=True)

def trashnet_features(spec: str = SPEC):
    "Features (n, views, dim), labels, splits and class names of every TrashNet train/valid photo, from the cache"
    found = walk_dataset(TRASHNET)
    names = found.classes
    photos = [p for p in found.photos if p.split in ('train', 'valid')]
    emb = get_embedder(spec)
    t = time.perf_counter()
    from fastprogress.fastprogress import progress_bar
    feats, ok, errors = FeatureCache().features(emb, [p.path for p in photos], VIEWS, progress=progress_bar)
    log(f'features of {len(ok)} photos ({emb.key}) in {time.perf_counter() - t:.0f} s; {len(errors)} unreadable')
    keep = {Path(p) for p in ok}
    photos = [p for p in photos if Path(p.path) in keep]
    y = np.array([names.index(p.label) for p in photos])
    split = np.array([p.split for p in photos])
    return feats, y, split, names

# ---------------------------------------------------------------- heads (the default recipe's shape)
HIDDEN, EPOCHS, BS, LR, WD = 512, 30, 128, 1e-3, 1e-2

def train_head(x, y, n_classes, hidden=HIDDEN, epochs=EPOCHS, seed=0, balanced=False):
    "An MLP head (hidden > 0) or a linear one on standardised features x (n, views, d); views are extra samples"
    torch.manual_seed(seed)
    d = x.shape[-1]
    head = (torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, n_classes))
            if hidden else torch.nn.Sequential(torch.nn.Linear(d, n_classes)))
    xs, ys = x.reshape(-1, d), y.repeat_interleave(x.shape[1])
    w = None
    if balanced:
        counts = torch.bincount(ys, minlength=n_classes).float()
        w = counts.sum() / (n_classes * counts.clamp(min=1))
    opt = torch.optim.AdamW(head.parameters(), LR, weight_decay=WD)
    steps = epochs * math.ceil(len(xs) / BS)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=g).split(BS):
            loss = F.cross_entropy(head(xs[idx]), ys[idx], weight=w)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return head.eval()

@torch.no_grad()
def penultimate(head, x): return head[:-1](x)          # (n, views, h): the final layer's input

@torch.no_grad()
def view_logits(final, h): return final(h).mean(1)     # the views' logits averaged, as FeatureClassifier does

# ---------------------------------------------------------------- one fold
def scores(pred, y, novel):
    "novel recall, base accuracy, overall accuracy, false-novel rate (%), for 6-way predictions"
    is_novel = y == novel
    return dict(novel_recall=100 * (pred[is_novel] == novel).mean(), base_acc=100 * (pred[~is_novel] == y[~is_novel]).mean(),
                overall=100 * (pred == y).mean(), false_novel=100 * (pred[~is_novel] == novel).mean())

def unit(f):
    "Per-view unit features averaged over views, unit length again: (n, d)"
    return F.normalize(F.normalize(f, dim=-1).mean(1), dim=-1)
GRID = [(sc, sh) for sc in (0.25, 0.5, 0.75, 1.0) for sh in (0., -2.)]   # candidates for fewshot.SCALE, SHIFT

def run_fold(feats, y, split, novel, ks, draws, retrain_draws, seed=0):
    "Every method's scores for one held-out class: {(method, K): [score dicts, one per draw]}"
    tr, va = torch.from_numpy(split == 'train'), torch.from_numpy(split == 'valid')
    base_tr = tr & (y != novel)
    classes = [c for c in range(6) if c != novel]
    remap = torch.full((6,), -1, dtype=torch.long); remap[classes] = torch.arange(5)
    mean, std = feats[base_tr].reshape(-1, feats.shape[-1]).mean(0), feats[base_tr].reshape(-1, feats.shape[-1]).std(0).clamp(min=1e-6)
    x = (feats - mean) / std
    yv = y[va].numpy()
    to6 = lambda p5: np.array(classes)[p5]      # 5-class indices to TrashNet's
    out, t = {}, time.perf_counter()
    heads = {'mlp': train_head(x[base_tr], remap[y[base_tr]], 5, seed=seed), 'linear': train_head(x[base_tr], remap[y[base_tr]], 5, hidden=0, seed=seed)}
    base5, lvs = {}, {}
    for kind, head in heads.items():
        with torch.no_grad(): lvs[kind] = head(x[va]).mean(1)
        b = yv != novel
        base5[kind] = 100 * (to6(lvs[kind].argmax(1).numpy())[b] == yv[b]).mean()
    u = unit(feats)
    protos = torch.stack([u[tr & (y == c)].mean(0) for c in classes])
    rng = np.random.default_rng(seed + novel)
    pool = np.flatnonzero((tr & (y == novel)).numpy())
    for k in ks:
        for d in range(draws):
            sup = torch.as_tensor(rng.choice(pool, k, replace=False))
            for kind, head in heads.items():
                for sc, sh in (GRID if kind == 'mlp' else [(fewshot.SCALE, fewshot.SHIFT), (1.0, 0.)]):
                    w, b = fewshot.imprint(x[sup], head, 0, sc, sh)
                    logits = torch.cat([lvs[kind], ((x[va] @ w) + b).mean(1, keepdim=True)], 1)
                    pred = np.append(classes, novel)[logits.argmax(1).numpy()]
                    name = f'imprint x{sc:g} {sh:+g}' + (' (linear head)' if kind == 'linear' else '')
                    out.setdefault((name, k), []).append(dict(scores(pred, yv, novel), base5=base5[kind]))
            head = heads['mlp']   # Qi et al.'s imprinting at the final layer's input (the hidden layer)
            hs, hv = penultimate(head, x[sup]), penultimate(head, x[va])
            w = F.normalize(hs.reshape(-1, hs.shape[-1]).mean(0), dim=0) * head[-1].weight.norm(dim=1).mean()
            logits = torch.cat([lvs['mlp'], ((hv @ w) + head[-1].bias.mean()).mean(1, keepdim=True)], 1)
            pred = np.append(classes, novel)[logits.argmax(1).numpy()]
            out.setdefault(('imprint at the final layer', k), []).append(dict(scores(pred, yv, novel), base5=base5['mlp']))
            pn = F.normalize(u[sup].mean(0), dim=0)
            pred = np.append(classes, novel)[(u[va] @ torch.cat([protos, pn[None]]).T).argmax(1).numpy()]
            out.setdefault(('prototypes', k), []).append(dict(scores(pred, yv, novel), base5=base5['mlp']))
            if d < retrain_draws:
                keep = base_tr.clone(); keep[sup] = True
                yy = torch.where(y[keep] == novel, torch.tensor(5), remap[y[keep]])
                head6 = train_head(x[keep], yy, 6, seed=seed + d, balanced=True)
                pred = np.append(classes, novel)[view_logits(head6[-1], penultimate(head6, x[va])).argmax(1).numpy()]
                out.setdefault(('re-train (balanced)', k), []).append(dict(scores(pred, yv, novel), base5=base5['mlp']))
    log(f'  held out {novel}: base 5-class accuracy {base5["mlp"]:.1f} (MLP), {base5["linear"]:.1f} (linear) in {time.perf_counter() - t:.0f} s')
    return out

def summary(rows_by_key, names):
    "Mean over held-out classes (each the mean of its draws) per (method, K)"
    res = {}
    for (method, k), per_class in rows_by_key.items():
        cls_means = [{m: float(np.mean([r[m] for r in rows])) for m in rows[0]} for rows in per_class.values()]
        agg = {m: round(float(np.mean([c[m] for c in cls_means])), 1) for m in cls_means[0]}
        agg['base_drop'] = round(agg['base5'] - agg['base_acc'], 1)
        agg['novel_recall_by_class'] = {names[c]: round(float(np.mean([r['novel_recall'] for r in rows])), 1) for c, rows in per_class.items()}
        agg['draws'] = len(next(iter(per_class.values())))
        res[(method, k)] = agg
    return res
def table(res, ks) -> str:
    "The markdown table: one row per method and K"
    head = '| method | K | overall | novel recall | base accuracy | base drop | false novel |\n|---|---|---|---|---|---|---|\n'
    order = sorted({m for m, _ in res}, key=lambda m: (m.startswith('re-'), m.startswith('proto'), m))
    return head + ''.join(f'| {m} | {k} | {r["overall"]:.1f} | {r["novel_recall"]:.1f} | {r["base_acc"]:.1f} | {r["base_drop"]:+.1f} | '
                          f'{r["false_novel"]:.1f} |\n' for m in order for k in ks if (r := res.get((m, k))))

def timing(repeats=5):
    "Seconds to add a class from 5 photo files to an exported model of the default kind, warm (model loaded) and cold"
    import tempfile
    from fastai.vision.all import ImageDataLoaders, Resize, Learner, CrossEntropyLossFlat
    from recycle_classifier.embed import feature_model, standardise
    from recycle_classifier.learner import export_learner
    from recycle_classifier.images import open_images
    feats, y, split, names = trashnet_features()
    tr = split == 'train'
    mean, std = standardise(feats[tr])
    head = train_head(torch.from_numpy((feats[tr] - mean) / std), torch.from_numpy(y[tr]), len(names))
    emb = get_embedder(SPEC)
    dls = ImageDataLoaders.from_folder(TRASHNET, train='train', valid='valid', item_tfms=Resize(emb.base, method='squish'),
                                       bs=32, num_workers=0)
    tmp = Path(tempfile.mkdtemp())
    pkl = export_learner(Learner(dls, feature_model(emb, head, mean, std), loss_func=CrossEntropyLossFlat()), tmp/'base.pkl')
    files = [p.path for p in walk_dataset(TRASHNET).in_split('valid')]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    fewshot.extend(pkl, 'cold', list(rng.choice(files, 5, replace=False)), tmp/'cold.extended')
    cold = time.perf_counter() - t
    ext = fewshot.Extension(pkl)
    warm = []
    for r in range(repeats + 1):
        photos = list(rng.choice(files, 5, replace=False))
        t = time.perf_counter()
        ok, _ = open_images(photos)
        ext.add(f'new{r}', [im for _, im in ok]).save(tmp/'warm.extended')
        if r: warm.append(time.perf_counter() - t)   # the first run warms up the engine
        ext.remove(f'new{r}') if len(ext.added) > 1 else None
    row = dict(benchmark='add a class', spec=SPEC, photos=5, repeats=repeats, warm_median_s=round(statistics.median(warm), 2),
               warm_max_s=round(max(warm), 2), cold_s=round(cold, 2), torch_threads=torch.get_num_threads(),
               load_avg=round(os.getloadavg()[0], 2), time=time.strftime('%Y-%m-%d %H:%M:%S'))
    print(json.dumps(row))
    with open(OUT/'extend.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
    md = OUT/'extend.md'
    if md.exists():
        md.write_text(md.read_text().split('\nAdding a class')[0].rstrip('\n') + f'\n\nAdding a class from 5 photo files to an exported model of the '
                      f'default kind ({SPEC}, both views; open, features, imprint, save): median {row["warm_median_s"]} s warm '
                      f'(model loaded; worst {row["warm_max_s"]} s, {repeats} runs), {row["cold_s"]} s cold (`extend` from the .pkl, '
                      f'loading included), {row["torch_threads"]} threads, load average {row["load_avg"]}.\n')

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--features-only', action='store_true', help='compute the features into the cache and stop')
    ap.add_argument('--ks', default='1,5,10,20'); ap.add_argument('--draws', type=int, default=20)
    ap.add_argument('--retrain-draws', type=int, default=5, help='draws of the (slow) re-train reference per K')
    ap.add_argument('--classes', default=None, help='held-out class indices (default: all 6)')
    ap.add_argument('--part', default=None, help='write results of these classes to a part file (merge with --merge)')
    ap.add_argument('--merge', action='store_true', help='merge the part files into the results')
    ap.add_argument('--timing', action='store_true', help='time adding a class from 5 photo files to an exported model')
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.timing: return timing()
    ks = [int(k) for k in args.ks.split(',')]
    parts = OUT/'extend-parts'
    if args.merge: return merge(parts, ks)
    feats, y, split, names = trashnet_features()
    if args.features_only: return
    feats, y = torch.from_numpy(feats), torch.from_numpy(y)
    held = [int(c) for c in args.classes.split(',')] if args.classes else list(range(6))
    rows = {}
    for c in held:
        for key, v in run_fold(feats, y, split, c, ks, args.draws, args.retrain_draws).items(): rows.setdefault(key, {})[c] = v
    parts.mkdir(parents=True, exist_ok=True)
    dump = {f'{m}|{k}': {str(c): v for c, v in per.items()} for (m, k), per in rows.items()}
    (parts/f'part-{args.part or "all"}.json').write_text(json.dumps(dict(names=names, rows=dump, ks=ks, draws=args.draws)))
    if not args.part: merge(parts, ks)

def merge(parts, ks):
    "Join the part files, print and write the table"
    rows, names, draws = {}, None, None
    for f in sorted(parts.glob('part-*.json')):
        d = json.loads(f.read_text()); names, draws = d['names'], d['draws']
        for key, per in d['rows'].items():
            m, k = key.rsplit('|', 1)
            rows.setdefault((m, int(k)), {}).update({int(c): v for c, v in per.items()})
    res = summary(rows, names)
    md = table(res, ks)
    print(md)
    info = dict(spec=SPEC, views=list(VIEWS), draws=draws, head=f'MLP {HIDDEN} hidden, {EPOCHS} epochs, AdamW one-cycle',
                host=platform.node(), torch=torch.__version__, time=time.strftime('%Y-%m-%d %H:%M:%S'))
    with open(OUT/'extend.jsonl', 'a') as f:
        for (m, k), r in sorted(res.items()): f.write(json.dumps(dict(info, method=m, k=k, **r)) + '\n')
    (OUT/'extend.md').write_text(md + NOTES.format(**info))

NOTES = """
Leave-one-class-out on TrashNet (Thung & Yang 2016, MIT license): for each of the 6 classes, a base head is trained on
the other 5 (train split; {head}; on standardised cached features of {spec}, both views); the held-out class is added
from K of its train photos ({draws} random draws per K and class; the re-train reference 5 draws); scores on the valid
split (328 photos), mean over the 6 held-out classes. overall: accuracy on all valid photos of the 6 classes; novel
recall: held-out photos called the new class; base accuracy: the 5 base classes' photos classified right in the 6-way
model; base drop: the 5-class base model's accuracy on the same photos minus that; false novel: base photos called the
new class.

imprint xS +B: the package's method (fewshot.imprint): a new logit, linear in the head's input (the standardised
features), pointing from their centre to the mean of the K photos' features, S times the mean length of the head's
logit gradients at the centre, B added to the mean trained logit there. The package's default is x0.5 +0 (SCALE, SHIFT
in fewshot.py), the best overall accuracy at K = 5. "(linear head)": the same with a linear base head. imprint at the
final layer: Qi et al.'s imprinting of the MLP's hidden features (the final layer's input), scaled to the trained rows'
mean length, bias the trained biases' mean. prototypes: the plain prototype model, nearest class mean of unit
features, base classes from all their train photos. re-train (balanced): the head trained again on the base train
photos plus the K photos, class-weighted.
"""

if __name__ == '__main__': main()
