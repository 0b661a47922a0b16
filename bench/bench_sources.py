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
  adapt           TrashNet's model adapted to garbage12 (T>G) and garbage12's model adapted to TrashNet (G>T), the
                  study's protocol (bench/results/adapt-study.md): the site is all of the source the model never saw;
                  each draw labels K photos a class of it (SITE_DIR/<class>/), splits the rest at random in halves:
                  SITE_DIR/unlabelled/ (T>G: with 200 of garbage12's never-taught photos too, as a real site's
                  folder would hold junk) and the photos reported (never used otherwise). Each adapted model is
                  scored with its site memory (label propagation over the unlabelled photos, `adapt`'s default)
                  and without it (the same model, memory removed: the head is fitted before the memory is built,
                  so this is exactly `adapt --no-propagation`), on the reported photos, the base model's own
                  held-out source (TrashNet valid / garbage12's 20%) and the never-taught photos not in the folder.
"Not sure" is the app's rule: top probability below 0.6. Reported for known classes of a source the model never
saw (share of photos, accuracy among the sure answers) and for never-taught items (share of photos).

    .venv/bin/python bench/bench_sources.py [--cache-dir DIR] [--draws 5] [--shots 5] [--adapt-only]
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
    from recycle_classifier.features.classifier import feature_probs
    learn = load_learner(model); meta = learner_info(learn); m = learn.model
    emb, fc, memory = embedder_from_meta(meta), FeatureCache(cache), getattr(m, 'memory', None)
    def probs(paths, with_memory=True):
        "the model's probabilities from cached features (its site memory included unless `with_memory` is False)"
        f, ok, err = fc.features(emb, paths, tuple(meta['views']))
        assert not err, err[:3]
        m.memory = memory if with_memory else None
        try: return feature_probs(m, f)
        finally: m.memory = memory
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


def score(probs_fn, classes, items, never=(), **kw):
    import numpy as np
    p = probs_fn([f for f, _ in items], **kw); y = np.array([classes.index(c) for _, c in items])
    sure = p.max(1) >= THRESHOLD
    out = dict(n=len(items), accuracy=round(float((p.argmax(1) == y).mean()), 4), not_sure=round(float(1 - sure.mean()), 4),
               sure_accuracy=round(float((p.argmax(1) == y)[sure].mean()), 4) if sure.any() else None)
    if never:
        q = probs_fn([f for f, _ in never], **kw)
        out.update(never_taught_n=len(never), never_taught_not_sure=round(float((q.max(1) < THRESHOLD).mean()), 4))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cache-dir', default=os.environ.get('RECYCLE_CLASSIFIER_CACHE_DIR'))
    ap.add_argument('--draws', type=int, default=5, help='random draws of the site photos for adapt')
    ap.add_argument('--shots', type=int, default=5, help='labelled site photos per class for adapt')
    ap.add_argument('--quick', action='store_true', help='no adapt rows')
    ap.add_argument('--adapt-only', action='store_true', help="only the two models adapt needs and the adapt rows (no 'both')")
    ap.add_argument('--models', default=None, help='folder to keep the trained models in and reuse them from on a re-run (default: a temporary folder)')
    ap.add_argument('--junk', type=int, default=200, help="T>G: never-taught garbage12 photos put in the site's unlabelled folder")
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
    for name, data in [('trashnet', TRASHNET), ('garbage12', g12), ('both', [TRASHNET, g12])][:2 if args.adapt_only else 3]:
        t = time.time()
        out = Path(args.models or tmp)/f'{name}.pkl'
        if out.exists() and args.models:
            m = dict(accuracy=json.loads(out.with_suffix('.json').read_text())['metrics']['accuracy'], reused=str(out))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            _, m = train(data, out=out, cache_dir=args.cache_dir, verbose=False, class_map=cmap if name != 'trashnet' else None)
        models[name] = out
        probs, classes = scorer(out, args.cache_dir)
        r = dict(train_seconds=None if 'reused' in m else round(time.time() - t, 1), valid_accuracy=round(m['accuracy'], 4))
        if name == 'trashnet': r.update(trashnet=score(probs, classes, tn_valid), garbage12=score(probs, classes, g_all, g_never))
        if name == 'garbage12': r.update(garbage12=score(probs, classes, g_valid, g_never_valid), trashnet=score(probs, classes, tn_all))
        if name == 'both': r.update(trashnet=score(probs, classes, tn_valid), garbage12=score(probs, classes, g_valid, g_never_valid))
        rows[name] = r
        print(name, json.dumps(r), flush=True)
    if not args.quick:
        for base, site_items, other, never in [('trashnet', g_all, tn_valid, g_never), ('garbage12', tn_all, g_valid, g_never)]:
            rows[f'adapt-{base}'] = adapt_rows(base, models[base], site_items, other, never, tmp, args)
            print(f'adapt-{base}', json.dumps(rows[f'adapt-{base}']), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    rec = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), wall_s=round(time.time() - t0, 1), threshold=THRESHOLD,
               uptime=Path('/proc/loadavg').read_text().split()[:3] if Path('/proc/loadavg').exists() else None, **rows)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS/'sources.jsonl', 'a') as f: f.write(json.dumps(rec) + '\n')
    (RESULTS/('sources-adapt.md' if args.adapt_only else 'sources.md')).write_text(table(rec))
    print(table(rec))


def link(f, d: Path, name: str):
    d.mkdir(parents=True, exist_ok=True); (d/name).symlink_to(f)


def adapt_rows(base, model, site_items, other, never, tmp, args) -> dict:
    "`adapt` of `model` to the source of `site_items`, draw by draw, scored with and without its site memory"
    import numpy as np
    from recycle_classifier.train.adapt import adapt
    per = []
    for d in range(args.draws):
        rng = np.random.default_rng(d)
        site = tmp/f'site-{base}-{d}'
        by = {}
        for f, c in site_items: by.setdefault(c, []).append(f)
        picked = set()
        for c, fs in sorted(by.items()):
            for i in rng.permutation(len(fs))[:args.shots]: link(fs[i], site/c, f'{i}-{fs[i].name}'); picked.add(fs[i])
        rest = [site_items[i] for i in rng.permutation(len(site_items)) if site_items[i][0] not in picked]
        free, report = rest[:len(rest) // 2], rest[len(rest) // 2:]
        junk = rng.permutation(len(never))[:args.junk] if base == 'trashnet' else []
        for i, (f, _) in enumerate(free + [never[j] for j in junk]): link(f, site/'unlabelled', f'{i}-{f.name}')
        never_reported = [n for j, n in enumerate(never) if j not in set(junk)]
        t = time.time()
        out = tmp/f'adapted-{base}-{d}.pkl'
        _, m = adapt(model, site, out=out, cache_dir=args.cache_dir, verbose=False)
        secs = time.time() - t
        probs, classes = scorer(out, args.cache_dir)
        r = dict(draw=d, seconds=round(secs, 1), memory_seconds=m['memory_seconds'], unlabelled=m['unlabelled'], site_memory=m['memory'])
        for tag, mem in (('memory', True), ('head', False)):
            r[tag] = dict(site=score(probs, classes, report, never_reported, with_memory=mem), other=score(probs, classes, other, with_memory=mem)['accuracy'])
        per.append(r)
        print(f"adapt-{base} draw {d}: {secs:.0f} s, rest of site {r['head']['site']['accuracy']:.3f} -> {r['memory']['site']['accuracy']:.3f} "
              f"with the memory, other source {r['head']['other']:.3f} -> {r['memory']['other']:.3f}", flush=True)
    mean = lambda f: round(statistics.mean(f(r) for r in per), 4)
    sd = lambda f: round(statistics.pstdev(f(r) for r in per), 4)
    out = dict(shots=args.shots, draws=args.draws, site_n=len(site_items), unlabelled=per[0]['unlabelled'], reported=per[0]['memory']['site']['n'],
               memory_photos=(per[0]['site_memory'] or {}).get('photos', 0), memory_mb=(per[0]['site_memory'] or {}).get('mb', 0),
               seconds_median=round(statistics.median(r['seconds'] for r in per), 1), memory_seconds_median=round(statistics.median(r['memory_seconds'] for r in per), 1))
    for tag in ('memory', 'head'):
        sfx = '' if tag == 'memory' else '_without_memory'
        out.update({f'rest_of_site{sfx}': mean(lambda r: r[tag]['site']['accuracy']), f'rest_of_site_sd{sfx}': sd(lambda r: r[tag]['site']['accuracy']),
                    f'other_source{sfx}': mean(lambda r: r[tag]['other']), f'not_sure{sfx}': mean(lambda r: r[tag]['site']['not_sure']),
                    f'sure_accuracy{sfx}': mean(lambda r: r[tag]['site']['sure_accuracy'] or 0),
                    f'never_taught_not_sure{sfx}': mean(lambda r: r[tag]['site']['never_taught_not_sure'])})
    out['per_draw'] = [dict(draw=r['draw'], seconds=r['seconds'], rest_of_site=r['memory']['site']['accuracy'], rest_of_site_without_memory=r['head']['site']['accuracy'],
                            other_source=r['memory']['other'], other_source_without_memory=r['head']['other']) for r in per]
    return out


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
        if a and 'rest_of_site_without_memory' in a:
            lines.append(f"\n`adapt` of the {base} model with {a['shots']} labelled photos a class of the other source ({a['site_n']} photos) and "
                         f"{a['unlabelled']} unlabelled ones, {a['draws']} draws, {a['reported']} photos reported each: "
                         f"{pct(a['rest_of_site'])} ± {pct(a['rest_of_site_sd'])} on the rest of it with the site memory "
                         f"({pct(a['rest_of_site_without_memory'])} ± {pct(a['rest_of_site_sd_without_memory'])} without), "
                         f"{pct(a['other_source'])} on its own source ({pct(a['other_source_without_memory'])} without); not sure at {THRESHOLD}: "
                         f"{pct(a['not_sure'])} of the site's photos, {pct(a['sure_accuracy'])} right when sure, {pct(a['never_taught_not_sure'])} of never-taught items "
                         f"(without: {pct(a['not_sure_without_memory'])}, {pct(a['sure_accuracy_without_memory'])}, {pct(a['never_taught_not_sure_without_memory'])}); "
                         f"{a['seconds_median']} s a run (median), of which the memory {a['memory_seconds_median']} s ({a['memory_photos']} photos, {a['memory_mb']} MB)")
        elif a: lines.append(f"\n`adapt` of the {base} model with {a['shots']} labelled photos a class of the other source ({a['draws']} draws): "
                           f"{pct(a['rest_of_site'])} ± {pct(a['rest_of_site_sd'])} on the rest of it, {pct(a['other_source'])} on its own source, {a['seconds_median']} s")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__': main()
