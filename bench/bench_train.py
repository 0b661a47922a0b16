"""Benchmark `train` on full TrashNet (train 1,768 -> valid 328) against the references, side by side.

Parts (each in its own process so peak memory is its own; run each under the CPU lock, each well under 8 min):
  ours     the default recipe: cold run (empty feature cache, a fresh process, wall time and peak memory), then seeds
           1 and 2 from the warm cache (mean of 3 seeds with spread), 5-fold CV on train (two splits), and a re-train after
           relabelling 5% of the training photos (a fresh process, warm cache)
  embed    embedding speed per engine (ONNX Runtime fp32, torch bfloat16 where the CPU has it, torch fp32)
  sixflag  the previous laptop recipe (--recipe finetune --arch efficientnet_lite0 --size 320 --epochs 0
           --freeze-epochs 3 --lr 1e-2 --squish)
  fastai   fastai's book ch. 2 recipe: vision_learner(mobilenet_v2) + RandomResizedCrop(224, 0.5) + aug_transforms
           + fine_tune(3)
Appends JSON lines to bench/results/train.jsonl and rewrites bench/results/train.md from the latest row of each part.
Data: TrashNet (Thung & Yang 2016, https://github.com/garythung/trashnet, MIT license).

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_train.py      # all four parts in one run (~35 min); or --part ours
    .venv/bin/python bench/bench_train.py --lock /tmp/rc-cpu.lock    # the same, the lock held per part (a shared machine)
"""
import argparse, contextlib, json, os, platform, resource, shutil, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'
PY = sys.executable


def peak_mb(): return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def child_train(data, out, cache, seed, extra):
    "One `train` in this process: print its metrics, wall time and peak memory"
    t = time.time()
    from recycle_classifier.train.run import train
    learn, m = train(data, out=out, cache_dir=cache, seed=seed, verbose=False, **extra)
    keep = ('accuracy', 'valid_loss', 'embed_seconds', 'train_seconds', 'cache_hits', 'cache_misses', 'recipe')
    print('RESULT ' + json.dumps(dict({k: m.get(k) for k in keep}, wall_s=round(time.time() - t, 1), peak_rss_mb=peak_mb())))


def child_fastai(data):
    t = time.time()
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, get_image_files, parent_label,
                                   GrandparentSplitter, RandomResizedCrop, aug_transforms, vision_learner, accuracy)
    from recycle_classifier.features.backbones import ARCHS, fetch_weights
    b = ARCHS['mobilenet_v2']; fetch_weights(b.weights)
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(train_name='train', valid_name='valid'),
                    item_tfms=RandomResizedCrop(224, min_scale=0.5), batch_tfms=aug_transforms()).dataloaders(data, bs=32)
    learn = vision_learner(dls, b.arch, weights=b.weights, metrics=accuracy)
    with learn.no_bar(): learn.fine_tune(3)
    print('RESULT ' + json.dumps(dict(accuracy=float(learn.validate()[1]), wall_s=round(time.time() - t, 1), peak_rss_mb=peak_mb())))


def run(args):
    "Run this script with `args` in a fresh process; its RESULT line as a dict, and the wall time"
    t = time.time()
    p = subprocess.run([PY, __file__, *map(str, args)], capture_output=True, text=True)
    line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
    if p.returncode or not line: print(p.stdout[-3000:], p.stderr[-3000:]); sys.exit(f'{args} failed')
    return json.loads(line[0][7:]), round(time.time() - t, 1)


def cv_on_train(data, cache, folds=5, seeds=(0, 1)):
    "Repeated 5-fold cross-validated accuracy of the default head on the training photos (one list per split seed; features from the warm cache)"
    import numpy as np
    from sklearn.model_selection import StratifiedKFold
    from recycle_classifier.train.settings import training_split, FEATURE_DEFAULTS as D
    from recycle_classifier.train.head import fit_head, head_probs
    from recycle_classifier.features.embedder import get_embedder
    from recycle_classifier.features.cache import FeatureCache
    from recycle_classifier.features.classifier import power_features
    from fastai.vision.all import parent_label
    root, classes, photos, _ = training_split(data)
    train = [p.path for p in photos]
    f, ok, _ = FeatureCache(cache).features(get_embedder(D['bodies']), train, D['views'])
    f = power_features(f, D['power'])
    y = np.array([classes.index(parent_label(p)) for p in ok])
    hp = {k: D[k] for k in ('hidden', 'in_drop', 'drop', 'epochs', 'bs', 'lr', 'wd', 'label_smoothing')}
    accs = [[] for _ in seeds]
    for acc, seed in zip(accs, seeds):
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(f, y):
            h, m, s = fit_head(f[tr], y[tr], len(classes), seed=seed, **hp)
            acc.append(float((head_probs(h, m, s, f[te]).argmax(1) == y[te]).mean()))
    return accs


def relabelled_copy(data, dest, frac=0.05, seed=0):
    "A copy of `data` (symlinks) with `frac` of the training photos moved to another class folder"
    import random
    shutil.copytree(data, dest, symlinks=True, copy_function=lambda s, d: os.symlink(os.path.abspath(s), d))
    photos = sorted((dest/'train').glob('*/*.jpg'))
    classes = sorted(d.name for d in (dest/'train').iterdir())
    rng = random.Random(seed)
    for p in rng.sample(photos, int(len(photos) * frac)):
        other = rng.choice([c for c in classes if c != p.parent.name])
        p.rename(dest/'train'/other/p.name)
    return int(len(photos) * frac)


def part_ours(data):
    tmp = Path(tempfile.mkdtemp()); cache = tmp/'cache'
    cold, cold_wall = run(['--child', 'train', '--data', data, '--out', tmp/'m0.pkl', '--cache', cache, '--seed', 42])
    seeds = [cold] + [run(['--child', 'train', '--data', data, '--out', tmp/f'm{s}.pkl', '--cache', cache, '--seed', s])[0] for s in (1, 2)]
    accs = [r['accuracy'] for r in seeds]
    losses = [round(r['valid_loss'], 4) for r in seeds]   # seeds can tie on accuracy (328 photos); the losses show they differ
    cv = cv_on_train(data, cache)
    n = relabelled_copy(data, tmp/'relabelled')
    warm, warm_wall = run(['--child', 'train', '--data', tmp/'relabelled', '--out', tmp/'r.pkl', '--cache', cache, '--seed', 42])
    shutil.rmtree(tmp)
    return dict(part='ours', valid_accuracy_seeds=accs, valid_loss_seeds=losses, valid_mean=statistics.mean(accs), valid_sd=statistics.stdev(accs),
                cv5_train=cv, cv5_repeats=[statistics.mean(c) for c in cv], cv5_mean=statistics.mean(sum(cv, [])), cold_wall_s=cold_wall, cold_embed_s=cold['embed_seconds'],
                cold_head_s=cold['train_seconds'], peak_rss_mb=max(r['peak_rss_mb'] for r in seeds + [warm]),
                relabelled=n, warm_relabel_wall_s=warm_wall, warm_cache_misses=warm['cache_misses'])


def part_embed(data, n=64):
    "Milliseconds per photo and view of each body in each engine (median of 3 batches of 8 photos)"
    import numpy as np, torch
    from recycle_classifier.features.embedder import Embedder, bf16_supported, onnxruntime_available
    from recycle_classifier.base.images import open_images
    from recycle_classifier.base.layout import image_files
    ims = [im for _, im in open_images(image_files(Path(data)/'valid')[:24])[0]]
    engines = (['onnxruntime'] if onnxruntime_available() else []) + (['torch'] if bf16_supported() else []) + ['torch-fp32']
    out = dict(part='embed', bf16_cpu=bf16_supported())
    for arch, size in (('efficientnet_lite0', 384), ('mobilenet_v2', 320)):
        for eng in engines:
            e = Embedder(arch, size, engine=eng)
            x = e.load(ims[:8]); e.embed_batch(x, ('orig', 'flip'))
            ts = []
            for i in range(3):
                x = e.load(ims[8*i:8*i+8]); t = time.perf_counter(); e.embed_batch(x, ('orig', 'flip')); ts.append(time.perf_counter() - t)
            out[f'{arch}@{size} {e.engine.name}'] = round(statistics.median(ts) / 16 * 1000, 1)
    return out


def part_sixflag(data):
    tmp = Path(tempfile.mkdtemp())
    r, wall = run(['--child', 'sixflag', '--data', data, '--out', tmp/'m.pkl', '--cache', tmp/'c', '--seed', 42])
    shutil.rmtree(tmp)
    return dict(part='sixflag', accuracy=r['accuracy'], wall_s=wall, peak_rss_mb=r['peak_rss_mb'])


def part_fastai(data):
    r, wall = run(['--child', 'fastai', '--data', data])
    return dict(part='fastai', accuracy=r['accuracy'], wall_s=wall, peak_rss_mb=r['peak_rss_mb'])


SIXFLAG = dict(recipe='finetune', arch='efficientnet_lite0', size=320, epochs=0, freeze_epochs=3, lr=1e-2, squish=True)


def table(rows):
    "The README table from the latest row of each part"
    last = {r['part']: r for r in rows if 'part' in r}
    L = ['| recipe | TrashNet valid accuracy | 5-fold CV on train | wall time, cold | re-train after relabelling 5%, warm | peak memory |',
         '|---|---|---|---|---|---|']
    if 'ours' in last:
        o = last['ours']
        L.append(f"| default `train` (features) | {o['valid_mean']:.1%} ± {o['valid_sd']:.1%} (seeds: " +
                 ', '.join(f'{a:.1%}' for a in o['valid_accuracy_seeds']) +
                 (f"; valid loss {', '.join(map(str, o['valid_loss_seeds']))}" if 'valid_loss_seeds' in o else '') + f") | {o['cv5_mean']:.1%}" + (f" (two 5-fold splits: {', '.join(f'{c:.1%}' for c in o['cv5_repeats'])})" if 'cv5_repeats' in o else '') + f" | {o['cold_wall_s']:.0f} s "
                 f"(embedding {o['cold_embed_s']:.0f} s) | {o['warm_relabel_wall_s']:.0f} s | {o['peak_rss_mb']} MB |")
    for k, name in (('sixflag', 'previous laptop recipe (six flags)'), ('fastai', "fastai book ch. 2 (mobilenet_v2)")):
        if k in last:
            r = last[k]; L.append(f"| {name} | {r['accuracy']:.1%} | | {r['wall_s']:.0f} s | a full re-run | {r['peak_rss_mb']} MB |")
    if 'embed' in last:
        e = last['embed']
        L += ['', 'Embedding, ms per photo and view (batches of 8 photos and their mirror images, median of 3): ' +
              '; '.join(f'{k} {v}' for k, v in e.items() if '@' in k) + f"; CPU has bfloat16: {e['bf16_cpu']}."]
    dates = sorted({r['date'] for r in last.values()})
    runs = sorted({r.get('run', r['date']) for r in last.values()})
    one = 'in one run' if len(runs) == 1 else f'in {len(runs)} runs'
    L += ['', f"Measured {one}, {dates[0]} to {dates[-1]}, on {os.cpu_count()} CPU cores ({platform.machine()}), each part under "
              'the CPU lock; TrashNet train (1,768) -> valid (328), Thung & Yang 2016, MIT license.']
    return '\n'.join(L) + '\n'


@contextlib.contextmanager
def part_lock(path):
    "Hold the exclusive flock on `path` (when given) for the duration"
    if not path: yield; return
    import fcntl
    with open(path, 'a') as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try: yield
        finally: fcntl.flock(fh, fcntl.LOCK_UN)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default=str(ROOT.parent/'shared'/'datasets'/'trashnet'))
    ap.add_argument('--part', default='ours,embed,sixflag,fastai', help='parts to run, comma-separated: ours, embed, sixflag, fastai (default: all, side by side in one run)')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--out', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--cache', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--seed', type=int, default=42, help=argparse.SUPPRESS)
    ap.add_argument('--lock', default=None, help='hold this lock file (flock) around each part, not the whole run, so a shared machine can run other work between parts')
    a = ap.parse_args()
    run_id = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')
    if a.child == 'train': return child_train(a.data, a.out, a.cache, a.seed, {})
    if a.child == 'sixflag': return child_train(a.data, a.out, a.cache, a.seed, SIXFLAG)
    if a.child == 'fastai': return child_fastai(a.data)
    if not (Path(a.data)/'train').is_dir(): sys.exit(f'no TrashNet at {a.data} (expected {a.data}/train/<class>/)')
    parts = dict(ours=part_ours, embed=part_embed, sixflag=part_sixflag, fastai=part_fastai)
    for name in a.part.split(','):
        print(f'== {name}', flush=True)
        with part_lock(a.lock):
            row = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), run=run_id, cpus=os.cpu_count(),
                       load_avg_1m=round(os.getloadavg()[0], 2), **parts[name](a.data))
        print(json.dumps(row), flush=True)
        with open(RESULTS/'train.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
    rows = [json.loads(l) for l in (RESULTS/'train.jsonl').read_text().splitlines() if l.strip()]
    (RESULTS/'train.md').write_text(table(rows))
    print(table(rows))


if __name__ == '__main__':
    main()
