"""Benchmark the default training recipe on full TrashNet (train -> valid) against two references, side by side.

Recipes, each run in its own process (so peak memory is its own):
  ours      recycle_classifier.train.train() with our laptop recipe (OURS below): EfficientNet-Lite0, body frozen,
            head trained 3 epochs on whole photos squished to 320 px
  fastai    fastai's book ch. 2 recipe: vision_learner(mobilenet_v2) + RandomResizedCrop(224, 0.5) + aug_transforms
            + fine_tune(3), batch 32, no other changes
  logreg    logistic regression on frozen ImageNet MobileNetV2 features (centre crop 224)
Then, for the exported model of `ours`: single-image and batched inference latency (medians), and the per-step
speed of fastai's default batches vs FastCPUBatches (median of several steps, same batch, same model).

Prints a table and appends one JSON line per run to bench/results/train.jsonl; writes bench/results/train.md.
Data: TrashNet (Thung & Yang 2016, https://github.com/garythung/trashnet, MIT license).

    .venv/bin/python bench/bench_train.py [--data ../shared/datasets/trashnet] [--only ours,fastai,logreg] [--size PX]
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'


# our laptop recipe: the same as
#   recycle-classifier train DATA --arch efficientnet_lite0 --size 320 --epochs 0 --freeze-epochs 3 --lr 1e-2 --squish
OURS = dict(arch='efficientnet_lite0', size=320, epochs=0, freeze_epochs=3, lr=1e-2, squish=True)

def run_ours(data, out, size=None):
    from recycle_classifier.train import train
    learn, m = train(data, out=out, **{**OURS, 'size': size or OURS['size']})
    return dict(accuracy=m['accuracy'], **{k: m[k] for k in ('arch', 'epochs', 'freeze_epochs', 'size', 'lr', 'squish')})


def run_fastai(data, out):
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, get_image_files, parent_label,
                                   GrandparentSplitter, RandomResizedCrop, aug_transforms, vision_learner, accuracy)
    from recycle_classifier.backbones import ARCHS, fetch_weights
    b = ARCHS['mobilenet_v2']; fetch_weights(b.weights)
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(train_name='train', valid_name='valid'),
                    item_tfms=RandomResizedCrop(224, min_scale=0.5), batch_tfms=aug_transforms()
                    ).dataloaders(data, bs=32)
    learn = vision_learner(dls, b.arch, weights=b.weights, metrics=accuracy)
    learn.fine_tune(3)
    return dict(accuracy=float(learn.validate()[1]), epochs=3, freeze_epochs=1, size=224)


def run_logreg(data, out):
    import numpy as np, torch
    from sklearn.linear_model import LogisticRegression
    from recycle_classifier.backbones import ARCHS, imagenet_model
    from recycle_classifier.core import open_image, image_files
    model = imagenet_model('mobilenet_v2').eval()
    tfm = ARCHS['mobilenet_v2'].weights.transforms()
    def features(split):
        files = image_files(Path(data)/split)
        xs, ys = [], []
        with torch.no_grad():
            for i in range(0, len(files), 64):
                batch = torch.stack([tfm(open_image(f)) for f in files[i:i+64]])
                xs.append(model.classifier[:-1](torch.flatten(
                    torch.nn.functional.adaptive_avg_pool2d(model.features(batch), 1), 1)).numpy())
        return np.concatenate(xs), [f.parent.name for f in files]
    (xt, yt), (xv, yv) = features('train'), features('valid')
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(xt, yt)
    return dict(accuracy=float((clf.predict(xv) == np.array(yv)).mean()))


def latency(model_path, data, n=20):
    "Median single-photo latency (load+predict) and batched throughput of the exported model"
    from recycle_classifier.export import load_model, predict_paths
    from recycle_classifier.core import image_files
    learn = load_model(model_path)
    files = image_files(Path(data)/'valid')
    list(predict_paths(learn, files[:2]))  # warm-up
    singles = []
    for f in files[:n]:
        t = time.perf_counter(); list(predict_paths(learn, [f])); singles.append(time.perf_counter() - t)
    batch = files[:128]
    t = time.perf_counter(); list(predict_paths(learn, batch, bs=64)); tb = time.perf_counter() - t
    return dict(single_ms_median=1000*statistics.median(singles), batched_ms_per_image=1000*tb/len(batch))


def step_speed(data, steps=6):
    "Median seconds per training step: fastai's default batches vs FastCPUBatches, same batch and model"
    import torch
    from fastai.vision.all import vision_learner, accuracy
    from recycle_classifier.backbones import ARCHS
    from recycle_classifier.data import get_dls
    from recycle_classifier.train import FastCPUBatches
    b = ARCHS['mobilenet_v2']
    dls = get_dls(data, size=224, bs=32, verbose=False)
    xb, yb = dls.one_batch()
    out = {}
    for name, cbs in (('fastai_default', []), ('fast_cpu_batches', [FastCPUBatches()])):
        learn = vision_learner(dls, b.arch, weights=b.weights, metrics=accuracy, cbs=cbs)
        learn.unfreeze(); learn.create_opt()
        learn.opt.zero_grad()
        if cbs: learn.model.to(memory_format=torch.channels_last)
        times = []
        for _ in range(steps):
            learn.xb, learn.yb = (xb,), (yb,)
            t = time.perf_counter()
            for cb in cbs: cb.learn = learn; cb.before_batch()
            loss = learn.loss_func(learn.model(*learn.xb), yb); loss.backward(); learn.opt.step(); learn.opt.zero_grad()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times[1:])
    out['speedup'] = out['fastai_default'] / out['fast_cpu_batches']
    return out


def child(recipe, data, out, size=None):
    "Run one recipe in this process and print its JSON result"
    t = time.time()
    res = dict(recipe=recipe, **(run_ours(data, out, size) if recipe == 'ours' else
                                 {'fastai': run_fastai, 'logreg': run_logreg}[recipe](data, out)))
    res['wall_s'] = round(time.time() - t, 1)
    res['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if recipe == 'ours':
        res.update(latency(out, data))
        res['step_seconds'] = step_speed(data)
    print('RESULT ' + json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default=str(ROOT.parent/'shared'/'datasets'/'trashnet'))
    ap.add_argument('--only', default='ours,fastai,logreg')
    ap.add_argument('--size', type=int, default=None, help="image size for `ours` (default: the recipe's)")
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--out', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a.child, a.data, a.out, a.size)
    if not (Path(a.data)/'train').is_dir(): sys.exit(f'no TrashNet at {a.data} (expected {a.data}/train/<class>/)')
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    stamp = lambda: dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), cpus=os.cpu_count(),
                         machine=platform.machine(), load_avg_1m=os.getloadavg()[0])
    for recipe in a.only.split(','):
        print(f'== {recipe}', flush=True)
        p = subprocess.run([sys.executable, __file__, '--child', recipe, '--data', a.data, '--out', str(tmp/f'{recipe}.pkl')] + (['--size', str(a.size)] if a.size else []),
                           capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
        if p.returncode or not line: print(p.stdout[-3000:], p.stderr[-3000:]); sys.exit(f'{recipe} failed')
        rows.append({**stamp(), **json.loads(line[0][7:])})
        print(json.dumps(rows[-1]), flush=True)
        with open(RESULTS/'train.jsonl', 'a') as f: f.write(json.dumps(rows[-1]) + '\n')  # each as it completes
    lines = ['| recipe | validation accuracy | wall time | peak memory |', '|---|---|---|---|']
    lines += [f"| {r['recipe']} | {r['accuracy']:.1%} | {r['wall_s']/60:.1f} min | {r['peak_rss_mb']} MB |" for r in rows]
    lines += ['', 'ours: ' + ', '.join(f'{k}={v}' for k, v in OURS.items()) + '; fastai: its book ch. 2 recipe on '
              'mobilenet_v2; logreg: logistic regression on frozen mobilenet_v2 features.']
    ours = next((r for r in rows if r['recipe'] == 'ours'), None)
    if ours:
        s = ours['step_seconds']
        lines += ['', f"Exported model (ours): single photo {ours['single_ms_median']:.0f} ms (median of 20), "
                      f"batched {ours['batched_ms_per_image']:.0f} ms per photo (batches of 64).",
                  f"Training step, batch 32 at 224 px: fastai default {s['fastai_default']:.2f} s, "
                  f"FastCPUBatches {s['fast_cpu_batches']:.2f} s ({s['speedup']:.2f}x, medians)."]
    end = rows[-1]
    loads = ', '.join(f"{r['recipe']} {r['load_avg_1m']:.1f}" for r in rows)
    lines += ['', f"Measured {end['date']} on {end['cpus']} CPU cores ({end['machine']}); 1-minute load average "
                  f"after each recipe: {loads}. TrashNet train (1,768) -> valid (328)."]
    (RESULTS/'train.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
