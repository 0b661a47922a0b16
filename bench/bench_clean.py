"""Benchmark the cleaning stage's ranking on TrashNet with known wrong labels.

Copies ../shared/datasets/trashnet/train (TrashNet, Thung & Yang 2016, MIT license) to a temporary folder,
moves a seeded fraction (default 10%) of its photos into another class folder (a flipped label), runs
`recycle_classifier.clean.scores.suggest` and measures how many flipped photos are in the top K = 2 x flipped of
its ranking (precision and recall), beside:

- cleanlab's `find_label_issues` set on its own (what `suggest` flags);
- plain top loss of the same out-of-fold model (-log p(label)), fastai's ranking but with fair probabilities;
- top loss in-sample: the same classifier fitted on all photos, then ranked by its loss on them, which is what
  fastai's `ImageClassifierCleaner` does with a learner's losses on its own training data (also with a weakly
  regularised head, C=1, which memorises its training labels more, as a fine-tuned network does).

Features come from the package's shared feature cache (by content hash; --cache-dir names its folder, default
the user's cache folder shared with every stage), with `train`'s default bodies unless --bodies says otherwise, so
features `train` cached are read and only photos never embedded are. `suggest` is timed twice: the first run
(cold when the cache does not hold the photos yet; its cache hits and misses are recorded) and again, warm.
Prints a table and appends one JSON line to bench/results/clean.jsonl.

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_clean.py [--frac 0.1] [--seed 0] [--bodies ARCH@PX+...] [--cache-dir DIR]
"""
import argparse, json, os, platform, shutil, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
from recycle_classifier.clean.scores import suggest, list_photos, class_names, split_label, clean_embedder, embed_photos, oof_probs
from recycle_classifier.features.embedder import DEFAULT_BODIES
from recycle_classifier.features.cache import FeatureCache
from recycle_classifier.base.fileio import append_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'/'train'
RESULTS = Path(__file__).parent/'results'/'clean.jsonl'


def flip_labels(root: Path, frac: float, seed: int) -> dict[str, str]:
    "Move a seeded `frac` of the photos to another (random) class folder; {new path: true class}"
    rng = np.random.default_rng(seed)
    photos, classes = list_photos(root), class_names(root)
    flipped = {}
    for i in rng.choice(len(photos), int(round(frac * len(photos))), replace=False):
        rel = photos[i]
        s, c = split_label(rel)
        new = rng.choice([k for k in classes if k != c])
        dst = (root/s/new if s else root/new)/Path(rel).name
        assert not dst.exists()
        (root/rel).rename(dst)
        flipped[dst.relative_to(root).as_posix()] = c
    return flipped


def at_k(ranked, flipped, k: int) -> dict:
    "Precision and recall of the first `k` of a ranking"
    hits = sum(p in flipped for p in ranked[:k])
    return dict(k=k, hits=hits, precision=round(hits / max(1, k), 4), recall=round(hits / len(flipped), 4))


def in_sample_top_loss(X, labels, C: float) -> np.ndarray:
    "Loss of each photo under the same classifier fitted on all photos, labels included (fastai cleaner style)"
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(X, labels)
    p = clf.predict_proba(X)
    return -np.log(np.clip(p[np.arange(len(labels)), np.searchsorted(clf.classes_, labels)], 1e-12, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', type=Path, default=DATA, help='dataset to copy (default: TrashNet train)')
    ap.add_argument('--frac', type=float, default=0.1, help='fraction of labels to flip (default 0.1)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--size', type=int, default=None, help='image size for a body named without @PX')
    ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--bodies', '--embedder', default=DEFAULT_BODIES, help="ImageNet bodies (default train's, %(default)s)")
    ap.add_argument('--cache-dir', '--cache', type=Path, default=None, help="feature cache folder (default: the user's shared one)")
    args = ap.parse_args()
    if not args.data.is_dir(): sys.exit(f'{args.data}: no such folder')
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)/'data'
        shutil.copytree(args.data, root)
        flipped = flip_labels(root, args.frac, args.seed)
        k = 2 * len(flipped)
        t0 = time.perf_counter()
        sg = suggest(root, size=args.size, folds=args.folds, seed=args.seed, cache_dir=args.cache_dir, progress=True,
                     bodies=args.bodies)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()  # again, as after applying decisions: every photo's features come from the cache
        warm = suggest(root, size=args.size, folds=args.folds, seed=args.seed, cache_dir=args.cache_dir, bodies=args.bodies)
        seconds_warm = time.perf_counter() - t0
        t = sg.table[sg.table.quality.notna()]
        ranked = list(t.path)
        label_flag = t[t.reason.str.contains('label:', regex=False)]
        oof_loss = -np.log(np.clip(t.quality.values, 1e-12, 1))
        top_loss_oof = list(t.path.values[np.argsort(-oof_loss, kind='stable')])
        emb = clean_embedder(size=args.size, bodies=args.bodies)
        good, X, _ = embed_photos(root, list_photos(root), emb, FeatureCache(args.cache_dir))
        labels = np.array([sg.classes.index(split_label(r)[1]) for r in good])
        C = oof_probs.__defaults__[-1]
        top_loss_in = [good[i] for i in np.argsort(-in_sample_top_loss(X, labels, C), kind='stable')]
        top_loss_in_weak = [good[i] for i in np.argsort(-in_sample_top_loss(X, labels, 1.0), kind='stable')]
        true = np.array([sg.classes.index(flipped.get(r, split_label(r)[1])) for r in t.path])
        pcols = [f'p_{c}' for c in sg.classes]
        oof_acc_true = float((t[pcols].values.argmax(1) == true).mean())
    hits_flag = sum(p in flipped for p in label_flag.path)
    res = dict(
        date=datetime.now(timezone.utc).isoformat(timespec='seconds'), dataset=str(args.data), photos=len(t),
        flipped=len(flipped), frac=args.frac, seed=args.seed, size=args.size, folds=args.folds, embedder=sg.embedder,
        seconds=round(seconds, 1), cache_first_run=sg.cache, seconds_warm_cache=round(seconds_warm, 1), cache_warm_run=warm.cache, oof_accuracy_vs_true_labels=round(oof_acc_true, 4),
        ours=at_k(ranked, flipped, k),
        cleanlab_flagged=dict(n=len(label_flag), hits=hits_flag, precision=round(hits_flag / max(1, len(label_flag)), 4),
                              recall=round(hits_flag / len(flipped), 4)),
        top_loss_out_of_fold=at_k(top_loss_oof, flipped, k),
        top_loss_in_sample=at_k(top_loss_in, flipped, k),
        top_loss_in_sample_C1=at_k(top_loss_in_weak, flipped, k),
        flagged_other=sg.counts(), machine=f'{platform.machine()} {os.cpu_count()} cpus',
        load_average=[round(x, 1) for x in os.getloadavg()])   # timings on a shared machine mean little without it
    print(f'TrashNet train: {res["photos"]} photos, {len(flipped)} labels flipped ({args.frac:.0%}, seed {args.seed}); '
          f'top K = {k}; suggest took {seconds:.1f}s (cache {sg.cache}), {seconds_warm:.1f}s again from the cache ({sg.embedder}; out-of-fold accuracy vs true labels {oof_acc_true:.1%})')
    print(f'{"ranking":<44} {"precision":>9} {"recall":>7}')
    for name, key in [('ours: cleanlab issues first, by label quality', 'ours'),
                      ('plain top loss, out-of-fold (same model)', 'top_loss_out_of_fold'),
                      ('plain top loss, in-sample (fastai cleaner)', 'top_loss_in_sample'),
                      ('  same, weakly regularised head (C=1)', 'top_loss_in_sample_C1')]:
        print(f'{name:<44} {res[key]["precision"]:>9.1%} {res[key]["recall"]:>7.1%}')
    cf = res['cleanlab_flagged']
    print(f'{"cleanlab find_label_issues set (n=" + str(cf["n"]) + ")":<44} {cf["precision"]:>9.1%} {cf["recall"]:>7.1%}')
    print(f'target: recall at top K >= 80%: {"met" if res["ours"]["recall"] >= 0.8 else "NOT met"}')
    append_jsonl(RESULTS, res)
    print(f'appended to {RESULTS}')


if __name__ == '__main__':
    main()
