"""Photos from somewhere else: the default recipe trained on one source and scored on another, in one run.

Sources: TrashNet (studio photos, ../shared/datasets/trashnet, train 1,768 / valid 328) and garbage12 (web photos,
../shared/datasets/garbage12, mapped to TrashNet's six classes with bench/sources-map.yaml; its battery, biological,
clothes and shoes photos are items a six-class sorter was never taught). garbage12 is split once by the SHA-256 of
each photo's bytes: 80% to train on, 20% held out.

Rows (each `train` is the product's own, through the feature cache; scores come from the exported head on cached
features, which `train`'s notebook checks equals the exported model within 1e-4):
  trashnet        trained on TrashNet train      -> TrashNet valid, all of garbage12 (a source never seen)
  garbage12       trained on garbage12's 80%     -> garbage12's 20%, all of TrashNet (never seen)
  both            trained on both training parts -> TrashNet valid, garbage12's 20%
  adapt           TrashNet's model adapted with K labelled garbage12 photos a class (`adapt`, several draws)
                  -> the rest of garbage12's 20%, TrashNet valid; and garbage12's model adapted to TrashNet
"Not sure" is the app's rule: top probability below 0.6. Reported for known classes of a source the model never
saw (share of photos, accuracy among the sure answers) and for never-taught items (share of photos).

    .venv/bin/python bench/bench_sources.py [--cache-dir DIR] [--draws 5] [--shots 5]
Appends a JSON line to bench/results/sources.jsonl and writes bench/results/sources.md.
"""
import argparse, hashlib, json, os, shutil, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent/'shared'/'datasets'
TRASHNET, GARBAGE = SHARED/'trashnet', SHARED/'garbage12'
MAP = ROOT/'bench'/'sources-map.yaml'
NEVER_TAUGHT = ('battery', 'biological', 'clothes', 'shoes')
RESULTS = ROOT/'bench'/'results'
THRESHOLD = 0.6


def sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def garbage_split(tmp: Path, held: float = 0.2):
    "garbage12 as train/ and valid/ folders of links (valid: the 20% of each class first by content hash)"
    for d in sorted(GARBAGE.iterdir()):
        if not d.is_dir(): continue
        files = sorted(d.glob('*.jpg'), key=sha)
        k = int(round(len(files) * held))
        for split, part in (('valid', files[:k]), ('train', files[k:])):
            (tmp/'garbage12'/split/d.name).mkdir(parents=True, exist_ok=True)
            for f in part: (tmp/'garbage12'/split/d.name/f.name).symlink_to(f)
    return tmp/'garbage12'


def scorer(model, cache):
    "A function scoring photo paths with the exported model's head on cached features: probabilities (n, classes)"
    from recycle_classifier.formats.learner import load_learner, learner_info
    from recycle_classifier.features.cache import FeatureCache
    from recycle_classifier.features.embedder import embedder_from_meta
    from recycle_classifier.features.classifier import power_features
    from recycle_classifier.train.head import head_probs
    learn = load_learner(model); meta = learner_info(learn); m = learn.model
    emb, fc = embedder_from_meta(meta), FeatureCache(cache)
    def probs(paths):
        f, ok, err = fc.features(emb, paths, tuple(meta['views']))
        assert not err, err[:3]
        return head_probs(m.head, m.feat_mean.numpy(), m.feat_std.numpy(), power_features(f, m.power))
    return probs, list(learn.dls.vocab)


def labelled(root, split=None, cmap=None):
    "(path, class) of a dataset folder's photos, classes renamed by the map; never-taught folders apart"
    from recycle_classifier.base.layout import walk_dataset
    known, other = [], []
    for p in walk_dataset(root).photos:
        if split and p.split != split: continue
        c = (cmap or {}).get(p.label, p.label)
        (other if p.label in NEVER_TAUGHT else known).append((p.path, c))
    return known, other


def score(probs_fn, classes, items, never=()):
    import numpy as np
    p = probs_fn([f for f, _ in items]); y = np.array([classes.index(c) for _, c in items])
    sure = p.max(1) >= THRESHOLD
    out = dict(n=len(items), accuracy=round(float((p.argmax(1) == y).mean()), 4), not_sure=round(float(1 - sure.mean()), 4),
               sure_accuracy=round(float((p.argmax(1) == y)[sure].mean()), 4) if sure.any() else None)
    if never:
        q = probs_fn([f for f, _ in never])
        out.update(never_taught_n=len(never), never_taught_not_sure=round(float((q.max(1) < THRESHOLD).mean()), 4))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cache-dir', default=os.environ.get('RECYCLE_CLASSIFIER_CACHE_DIR'))
    ap.add_argument('--draws', type=int, default=5, help='random draws of the site photos for adapt')
    ap.add_argument('--shots', type=int, default=5, help='labelled site photos per class for adapt')
    ap.add_argument('--quick', action='store_true', help='no adapt rows')
    args = ap.parse_args()
    import numpy as np
    from recycle_classifier.base.layout import read_class_map
    from recycle_classifier.train.run import train
    from recycle_classifier.train.adapt import adapt
    cmap = read_class_map(MAP)
    tmp = Path(tempfile.mkdtemp(prefix='bench-sources-'))
    g12 = garbage_split(tmp)
    tn_valid, _ = labelled(TRASHNET, 'valid')
    tn_all, _ = labelled(TRASHNET)
    g_valid, g_never_valid = labelled(g12, 'valid', cmap)
    g_all, g_never = labelled(g12, None, cmap)
    rows, t0 = {}, time.time()
    models = {}
    for name, data in [('trashnet', TRASHNET), ('garbage12', g12), ('both', [TRASHNET, g12])]:
        t = time.time()
        out = tmp/f'{name}.pkl'
        _, m = train(data, out=out, cache_dir=args.cache_dir, verbose=False, class_map=cmap if name != 'trashnet' else None)
        models[name] = out
        probs, classes = scorer(out, args.cache_dir)
        r = dict(train_seconds=round(time.time() - t, 1), valid_accuracy=round(m['accuracy'], 4))
        if name == 'trashnet': r.update(trashnet=score(probs, classes, tn_valid), garbage12=score(probs, classes, g_all, g_never))
        if name == 'garbage12': r.update(garbage12=score(probs, classes, g_valid, g_never_valid), trashnet=score(probs, classes, tn_all))
        if name == 'both': r.update(trashnet=score(probs, classes, tn_valid), garbage12=score(probs, classes, g_valid, g_never_valid))
        rows[name] = r
        print(name, json.dumps(r), flush=True)
    if not args.quick:
        for base, site_items, other in [('trashnet', g_valid, tn_valid), ('garbage12', tn_valid, g_valid)]:
            accs, others, secs = [], [], []
            for d in range(args.draws):
                rng = np.random.default_rng(d)
                site = tmp/f'site-{base}-{d}'
                by = {}
                for f, c in site_items: by.setdefault(c, []).append(f)
                picked = set()
                for c, fs in by.items():
                    for i in rng.permutation(len(fs))[:args.shots]:
                        (site/c).mkdir(parents=True, exist_ok=True); (site/c/f'{i}-{fs[i].name}').symlink_to(fs[i]); picked.add(fs[i])
                t = time.time()
                out = tmp/f'adapted-{base}-{d}.pkl'
                adapt(models[base], site, out=out, cache_dir=args.cache_dir, verbose=False)
                secs.append(time.time() - t)
                probs, classes = scorer(out, args.cache_dir)
                accs.append(score(probs, classes, [(f, c) for f, c in site_items if f not in picked])['accuracy'])
                others.append(score(probs, classes, other)['accuracy'])
            rows[f'adapt-{base}'] = dict(shots=args.shots, draws=args.draws, rest_of_site=round(statistics.mean(accs), 4),
                                         rest_of_site_sd=round(statistics.pstdev(accs), 4), other_source=round(statistics.mean(others), 4),
                                         seconds_median=round(statistics.median(secs), 1))
            print(f'adapt-{base}', json.dumps(rows[f'adapt-{base}']), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    rec = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), wall_s=round(time.time() - t0, 1), threshold=THRESHOLD, **rows)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS/'sources.jsonl', 'a') as f: f.write(json.dumps(rec) + '\n')
    (RESULTS/'sources.md').write_text(table(rec))
    print(table(rec))


def pct(x): return '' if x is None else f'{100 * x:.1f}%'


def table(r) -> str:
    lines = ['| trained on | TrashNet (its valid, or all) | garbage12 (its 20%, or all) | not sure, known classes of the unseen source | accuracy when sure | never-taught items: not sure |',
             '|---|---|---|---|---|---|']
    for name, unseen in [('trashnet', 'garbage12'), ('garbage12', 'trashnet'), ('both', None)]:
        x = r.get(name)
        if not x: continue
        u = x[unseen] if unseen else {}
        never = x['garbage12'].get('never_taught_not_sure')
        lines.append(f"| {name} | {pct(x['trashnet']['accuracy'])} | {pct(x['garbage12']['accuracy'])} | {pct(u.get('not_sure'))} | {pct(u.get('sure_accuracy'))} | {pct(never)} |")
    for base in ('trashnet', 'garbage12'):
        a = r.get(f'adapt-{base}')
        if a: lines.append(f"\n`adapt` of the {base} model with {a['shots']} labelled photos a class of the other source ({a['draws']} draws): "
                           f"{pct(a['rest_of_site'])} ± {pct(a['rest_of_site_sd'])} on the rest of it, {pct(a['other_source'])} on its own source, {a['seconds_median']} s")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__': main()
