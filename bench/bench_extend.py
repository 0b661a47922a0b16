"""Leave-one-class-out benchmark of extending a trained model with a new class from K photos (issue #15).

For each of TrashNet's 6 classes: a base head of the default recipe (`train.fit_head`, its default settings, on
standardised square roots of the cached features of the default bodies, both views) is trained on the other 5 classes (train split);
the held-out class is added from K = 1, 5, 10, 20 of its train photos (20 random draws each); everything is
scored on the valid split: novel-class recall, base-class accuracy (and its drop against the 5-class model),
overall accuracy on all 6 classes, and the false-novel rate (base photos called the new class). Methods: the
package's `extend.fit_row` (a logistic regression against samples of the base classes' feature statistics,
`protomodel.feature_stats`), the imprinting it falls back to for models without statistics, the plain prototype
model, and a re-train of the head with the K photos (the default recipe again), as references.

`--select` runs the same protocol inside the train split only (heads on 75% of each base class's train photos,
scored on the other 25% and on the held-out class's train photos that are not in the support pool), over a grid
of the method's settings: that is how `extend.LAM` and `extend.BIAS_SHIFT` were chosen, never on valid.

Features come from the package's FeatureCache (computed once, shared with the other stages and benchmarks).
Results: bench/results/extend.jsonl and bench/results/extend.md (the table), extend-select.md (the selection).
Data: TrashNet (Thung & Yang 2016, MIT license), train and valid splits.

Usage: flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_extend.py [--features-only] [--draws 20] [--select] [--timing]
"""
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from recycle_classifier.features.cache import FeatureCache
from recycle_classifier.features.embedder import get_embedder
from recycle_classifier.features.classifier import power_features  # noqa: E402
from recycle_classifier.base.layout import walk_dataset  # noqa: E402
from recycle_classifier.train.head import fit_head
from recycle_classifier.train.settings import FEATURE_DEFAULTS  # noqa: E402
from recycle_classifier.formats.protomodel import feature_stats, read_feature_stats  # noqa: E402
from recycle_classifier import extend  # noqa: E402

TRASHNET = Path(os.environ.get('TRASHNET', ROOT.parent/'shared'/'datasets'/'trashnet'))
SPEC = os.environ.get('EXTEND_BENCH_SPEC', 'efficientnet_lite0@384+mobilenet_v2@320')
VIEWS = ('orig', 'flip')
OUT = ROOT/'bench'/'results'
AT = 1   # the default head: Dropout, Linear (read here), ReLU, Dropout, Linear

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
    feats = power_features(feats, FEATURE_DEFAULTS['power'])   # as the default recipe takes them
    log(f'features of {len(ok)} photos ({emb.key}) in {time.perf_counter() - t:.0f} s; {len(errors)} unreadable')
    keep = {Path(p) for p in ok}
    photos = [p for p in photos if Path(p.path) in keep]
    y = np.array([names.index(p.label) for p in photos])
    split = np.array([p.split for p in photos])
    return feats, y, split, names

def base_head(feats, y, fit, classes, seed=42):
    "The default recipe's head on the photos `fit` of `classes`, and everything standardised its way"
    remap = {c: i for i, c in enumerate(classes)}
    head, mean, std = fit_head(feats[fit], np.array([remap[v] for v in y[fit]]), len(classes), seed=seed)
    return head, torch.from_numpy(mean), torch.from_numpy(std)

def scores(pred, y, novel):
    "novel recall, base accuracy, overall accuracy, false-novel rate (%), for 6-way predictions"
    is_novel = y == novel
    return dict(novel_recall=100 * (pred[is_novel] == novel).mean(), base_acc=100 * (pred[~is_novel] == y[~is_novel]).mean(),
                overall=100 * (pred == y).mean(), false_novel=100 * (pred[~is_novel] == novel).mean())

def unit(f):
    "Per-view unit features averaged over views, unit length again: (n, d)"
    return F.normalize(F.normalize(f, dim=-1).mean(1), dim=-1)

def row_methods(grid=None):
    "name -> f(support features, head, stats) -> (w, b): the package's method (or a grid of its settings) and imprinting"
    if grid: return {f'logistic lam {lam:g} shift {sh:+g}': (lambda xs, h, st, lam=lam, sh=sh: extend.fit_row(xs, h, AT, *st, lam=lam, shift=sh))
                     for lam, sh in grid}
    return {'logistic (package)': lambda xs, h, st: extend.fit_row(xs, h, AT, *st),
            'imprint (fallback)': lambda xs, h, st: extend.imprint(xs, h, AT)}

def run_fold(feats, y, split, novel, ks, draws, retrain_draws, inner=None, grid=None, seed=0, retrain_ks=None):
    "Every method's scores for one held-out class: {(method, K): [score dicts, one per draw]}"
    t = time.perf_counter()
    classes = [c for c in range(6) if c != novel]
    rng = np.random.default_rng(seed + novel)
    train = split == 'train'
    if inner is None:       # the reported protocol: base = train split, scored on valid
        fit, ev = train & (y != novel), split == 'valid'
        pool = np.flatnonzero(train & (y == novel))
    else:                   # selection inside train: 75% fits the head, the rest (and half the novel photos) scores
        fit, ev = train & (y != novel) & inner, train & (y != novel) & ~inner
        nt = rng.permutation(np.flatnonzero(train & (y == novel)))
        pool = nt[:len(nt) // 2]; ev = ev.copy(); ev[nt[len(nt) // 2:]] = True
    head, mean, std = base_head(feats, y, fit, classes)
    ft = torch.from_numpy(feats)
    x = (ft - mean) / std
    remap = np.full(6, -1); remap[classes] = np.arange(5)
    stats = read_feature_stats(feature_stats(x[torch.from_numpy(fit)], torch.from_numpy(remap[y[fit]]), classes))
    yv = y[ev]
    with torch.no_grad(): lv = head(x[torch.from_numpy(ev)]).mean(1)
    xv = x[torch.from_numpy(ev)].mean(1)
    b = yv != novel
    base5 = 100 * (np.array(classes)[lv.argmax(1).numpy()][b] == yv[b]).mean()
    u = unit(ft)
    protos = torch.stack([u[torch.from_numpy(fit & (y == c))].mean(0) for c in classes])
    labels6 = np.append(classes, novel)
    out = {}
    for k in ks:
        for d in range(draws):
            sup = rng.choice(pool, k, replace=False)
            for name, fn in row_methods(grid).items():
                w, bias = fn(x[torch.from_numpy(sup)], head, stats)
                with torch.no_grad(): logits = torch.cat([lv, (xv @ w + bias)[:, None]], 1)
                out.setdefault((name, k), []).append(dict(scores(labels6[logits.argmax(1).numpy()], yv, novel), base5=base5))
            if grid: continue
            pn = F.normalize(u[torch.from_numpy(sup)].mean(0), dim=0)
            pred = labels6[(u[torch.from_numpy(ev)] @ torch.cat([protos, pn[None]]).T).argmax(1).numpy()]
            out.setdefault(('prototypes', k), []).append(dict(scores(pred, yv, novel), base5=base5))
            if d < retrain_draws and (retrain_ks is None or k in retrain_ks):   # the default recipe again, on the base photos and the K new ones
                keep = fit.copy(); keep[sup] = True
                h6, m6, s6 = base_head(feats, np.where(y == novel, 6, y), keep, classes + [6], seed=42 + d)
                with torch.no_grad(): p6 = h6(((ft[torch.from_numpy(ev)] - m6) / s6)).mean(1).argmax(1).numpy()
                out.setdefault(('re-train (default recipe)', k), []).append(dict(scores(labels6[p6], yv, novel), base5=base5))
    log(f'  held out {novel}: base 5-class accuracy {base5:.1f} in {time.perf_counter() - t:.0f} s')
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
    head = '| method | K | overall | novel recall | base accuracy | base drop | false novel | draws |\n|---|---|---|---|---|---|---|---|\n'
    order = sorted({m for m, _ in res}, key=lambda m: (m.startswith('re-'), m.startswith('proto'), m.startswith('imprint'), m))
    return head + ''.join(f'| {m} | {k} | {r["overall"]:.1f} | {r["novel_recall"]:.1f} | {r["base_acc"]:.1f} | {r["base_drop"]:+.1f} | '
                          f'{r["false_novel"]:.1f} | {r["draws"]} |\n' for m in order for k in ks if (r := res.get((m, k))))

def timing(repeats=5):
    "Seconds to add a class from 5 photo files to an exported model of the default recipe: warm (model loaded) and cold"
    import tempfile
    from recycle_classifier.train.head import feature_learner
    from recycle_classifier.train.settings import training_split
    from recycle_classifier.formats.learner import export_learner
    from recycle_classifier.base.images import open_images
    feats, y, split, names = trashnet_features()
    root, classes, train_photos, valid_photos = training_split(TRASHNET)
    train_files, valid_files = [p.path for p in train_photos], [p.path for p in valid_photos]
    tr = split == 'train'
    head, mean, std = base_head(feats, y, tr, list(range(6)))
    emb = get_embedder(SPEC)
    learn = feature_learner(emb, head, mean.numpy(), std.numpy(), train_files, valid_files, classes, VIEWS, FEATURE_DEFAULTS['power'])
    x = (torch.from_numpy(feats[tr]) - mean) / std
    learn.recycle_meta = dict(embedder=emb.meta, views=list(VIEWS), feature_stats=feature_stats(x, y[tr], classes))
    tmp = Path(tempfile.mkdtemp())
    pkl = export_learner(learn, tmp/'base.pkl')
    files = list(valid_files)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    extend.extend(pkl, 'cold', list(rng.choice(files, 5, replace=False)), tmp/'cold.extended')
    cold = time.perf_counter() - t
    t = time.perf_counter()
    ext = extend.Extension(pkl)
    load = time.perf_counter() - t
    warm, parts = [], []
    for r in range(repeats + 1):
        photos = list(rng.choice(files, 5, replace=False))
        t0 = time.perf_counter()
        ok, _ = open_images(photos)
        t1 = time.perf_counter()
        feats5 = ext.features([im for _, im in ok])
        t2 = time.perf_counter()
        extend.fit_row(feats5, ext.head, ext.at, *ext.stats)
        t3 = time.perf_counter()
        ext.add(f'new{r}', [im for _, im in ok]).save(tmp/'warm.extended')
        t4 = time.perf_counter()
        if r:   # the first run warms up the engines
            parts.append((t1 - t0, t2 - t1, t3 - t2, (t4 - t3) - (t2 - t1) - (t3 - t2)))
            warm.append((t1 - t0) + (t4 - t3))    # open + add (features, fit, refresh) + save
        ext.remove(f'new{r}') if len(ext.added) > 1 else None
    med = lambda i: round(statistics.median(p[i] for p in parts), 3)
    row = dict(benchmark='add a class', spec=SPEC, photos=5, repeats=repeats, warm_median_s=round(statistics.median(warm), 2),
               warm_max_s=round(max(warm), 2), open_s=med(0), features_s=med(1), fit_s=med(2), refresh_save_s=med(3),
               load_s=round(load, 2), cold_s=round(cold, 2), torch_threads=torch.get_num_threads(),
               load_avg=round(os.getloadavg()[0], 2), time=time.strftime('%Y-%m-%d %H:%M:%S'))
    print(json.dumps(row))
    with open(OUT/'extend.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
    md = OUT/'extend.md'
    if md.exists(): md.write_text(md.read_text().split('\nAdding a class')[0].rstrip('\n') + timing_paragraph(row))

def timing_paragraph(row) -> str:
    "The timing sentence of extend.md"
    repeats = row['repeats']
    return (f'\n\nAdding a class from 5 photo files to an exported model '
                      f'of the default recipe ({SPEC}, both views; open, features, fit, save): median {row["warm_median_s"]} s warm '
                      f'(model loaded; worst {row["warm_max_s"]} s, {repeats} runs; of which opening {row["open_s"]} s, features '
                      f'{row["features_s"]} s, fitting the row {row["fit_s"]} s, the rest (new head, SHA-256 of the base, write) '
                      f'{row["refresh_save_s"]} s); loading the model {row["load_s"]} s; {row["cold_s"]} s for `extend` from the .pkl (loading '
                      f'the learner included; the embedder was already built in this process), {row["torch_threads"]} threads, load average {row["load_avg"]}.\n')

def last_timing() -> str:
    "The timing sentence of the latest timing row in extend.jsonl, if any"
    rows = [json.loads(l) for l in open(OUT/'extend.jsonl') if '"add a class"' in l] if (OUT/'extend.jsonl').exists() else []
    rows = [r for r in rows if 'features_s' in r]
    return timing_paragraph(rows[-1]) if rows else ''

GRID = [(lam, sh) for lam in (0.3, 1.0) for sh in (0.5, 1., 1.5, 2.)]

def select(feats, y, split, names, draws=5, max_drop=2.0):
    "The inner (train-only) leave-one-class-out over GRID at K = 5: the setting with the best recall within `max_drop`"
    rng = np.random.default_rng(123)
    inner = np.zeros(len(y), bool)
    for c in range(6):
        idx = rng.permutation(np.flatnonzero((split == 'train') & (y == c)))
        inner[idx[:int(.75 * len(idx))]] = True
    rows = {}
    for c in range(6):
        for key, v in run_fold(feats, y, split, c, [5], draws, 0, inner=inner, grid=GRID).items(): rows.setdefault(key, {})[c] = v
    res = summary(rows, names)
    ok = [(r['novel_recall'], m) for (m, _), r in res.items() if r['base_drop'] <= max_drop]
    best = max(ok)[1] if ok else None
    md = table(res, [5]) + (f'\nChosen (best novel recall with a base drop of at most {max_drop} points, inside the train split): '
                            f'**{best}**.\n' + SELECT_NOTES.format(draws=draws))
    print(md)
    (OUT/'extend-select.md').write_text(md)
    if best: (OUT/'extend-select.json').write_text(json.dumps(dict(zip(('lam', 'shift'), GRID[[m for m in row_methods(GRID)].index(best)]))))

SELECT_NOTES = """
Selection of `extend.LAM` and `extend.BIAS_SHIFT` on TrashNet's train split only (Thung & Yang 2016, MIT license):
for each held-out class, the default recipe's head is trained on 75% of each base class's train photos; the new
class is added from 5 of half of its train photos ({draws} draws); scores on the other 25% of the base photos and
the other half of the new class's photos. The valid split is not used.
"""

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--features-only', action='store_true', help='compute the features into the cache and stop')
    ap.add_argument('--ks', default='1,5,10,20'); ap.add_argument('--draws', type=int, default=20)
    ap.add_argument('--retrain-draws', type=int, default=1, help='draws of the (slow) re-train reference per K')
    ap.add_argument('--retrain-ks', default='5,20', help='the K values the (slow) re-train reference runs at')
    ap.add_argument('--classes', default=None, help='held-out class indices (default: all 6)')
    ap.add_argument('--part', default=None, help='write results of these classes to a part file (merge with --merge)')
    ap.add_argument('--merge', action='store_true', help='merge the part files into the results')
    ap.add_argument('--select', action='store_true', help='choose the method\'s settings on the train split (inner protocol)')
    ap.add_argument('--timing', action='store_true', help='time adding a class from 5 photo files to an exported model')
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.timing: return timing()
    ks = [int(k) for k in args.ks.split(',')]
    parts = OUT/'extend-parts'
    if args.merge: return merge(parts, ks)
    feats, y, split, names = trashnet_features()
    if args.features_only: return
    if args.select: return select(feats, y, split, names, min(args.draws, 5))
    held = [int(c) for c in args.classes.split(',')] if args.classes else list(range(6))
    rows = {}
    for c in held:
        for key, v in run_fold(feats, y, split, c, ks, args.draws, args.retrain_draws,
                                retrain_ks=[int(k) for k in args.retrain_ks.split(',')]).items(): rows.setdefault(key, {})[c] = v
    parts.mkdir(parents=True, exist_ok=True)
    dump = {f'{m}|{k}': {str(c): v for c, v in per.items()} for (m, k), per in rows.items()}
    (parts/f'part-{args.part or "all"}.json').write_text(json.dumps(dict(names=names, rows=dump, ks=ks, draws=args.draws,
                                                                          retrain_draws=args.retrain_draws)))
    if not args.part: merge(parts, ks)

def merge(parts, ks):
    "Join the part files, print and write the table"
    rows, names, draws, rdraws = {}, None, None, None
    for f in sorted(parts.glob('part-*.json')):
        d = json.loads(f.read_text()); names, draws, rdraws = d['names'], d['draws'], d.get('retrain_draws')
        for key, per in d['rows'].items():
            m, k = key.rsplit('|', 1)
            rows.setdefault((m, int(k)), {}).update({int(c): v for c, v in per.items()})
    res = summary(rows, names)
    md = table(res, ks)
    print(md)
    hp = {k: FEATURE_DEFAULTS[k] for k in ('hidden', 'in_drop', 'drop', 'epochs', 'lr', 'wd', 'label_smoothing')}
    info = dict(spec=SPEC, views=list(VIEWS), draws=draws, retrain_draws=rdraws, head=f'train.fit_head, defaults {hp}',
                lam=extend.LAM, shift=extend.BIAS_SHIFT, per=extend.PER_CLASS,
                host=platform.node(), torch=torch.__version__, time=time.strftime('%Y-%m-%d %H:%M:%S'))
    with open(OUT/'extend.jsonl', 'a') as f:
        for (m, k), r in sorted(res.items()): f.write(json.dumps(dict(info, method=m, k=k, **r)) + '\n')
    by_class = ', '.join(f'{c} {v:.0f}%' for c, v in res[('logistic (package)', 5)]['novel_recall_by_class'].items()) \
        if ('logistic (package)', 5) in res else ''
    (OUT/'extend.md').write_text(md + NOTES.format(by_class=by_class, **info) + last_timing())

NOTES = """
Leave-one-class-out on TrashNet (Thung & Yang 2016, MIT license): for each of the 6 classes, a base head is trained on
the other 5 (train split) by the default recipe ({head}), on standardised square roots of the cached features of {spec}, both views; the
held-out class is added from K of its train photos ({draws} random draws per K and class; the re-train reference
{retrain_draws} draw(s), at the K values it has rows for); scores on the valid split (328 photos), mean over the 6 held-out classes. overall: accuracy on all
valid photos of the 6 classes; novel recall: held-out photos called the new class; base accuracy: the 5 base classes'
photos classified right in the 6-way model; base drop: the 5-class base model's accuracy on the same photos minus
that; false novel: base photos called the new class.

logistic (package): `extend.fit_row`, the package's method for models that record their feature statistics
(`protomodel.feature_stats`: per-class mean and per-dimension std of the standardised training features): a new
logit, linear in the head's input, fitted by a logistic regression of the K photos against {per} samples per base
class drawn from those statistics, on the margin over the head's best trained logit; L2 {lam}, bias raised by {shift}
(both chosen on the train split only: extend-select.md). K = 5 novel recall by class: {by_class}.
imprint (fallback): `extend.imprint`, used for models without statistics (and whose training features are not in
the feature cache): the direction from the features' centre to the new photos' mean, on the head's gradient scale.
prototypes: the plain prototype model, nearest class mean of unit features, base classes from all their train photos.
re-train (default recipe): `train.fit_head` again on the base train photos plus the K new ones (minutes, not seconds).
"""

if __name__ == '__main__': main()
