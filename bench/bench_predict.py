"""Benchmark prediction: fastai's own paths against the torch-free ONNX predictor, side by side in one run.

For each model (a single-body model, EfficientNet-Lite0 at 320 px on the whole squished photo, one view; and
a two-body model like the cached-feature default, Lite0 + MobileNetV2 at 320 px on the photo and its mirror
image; both with an MLP head trained for one epoch on the embedded sample, TrashNet, Thung & Yang 2017, MIT),
it times, on the sample's 384 px validation photos:
  fastai `learn.predict(path)` one photo; fastai `get_preds` on a batch of 32 (per photo);
  ONNX `predict_paths([path])` one photo, file to probabilities; ONNX batched, 32 per batch (per photo);
  the same for a 4000x3000 (12-megapixel) JPEG; and int8 (static quantisation) one photo and batched;
and, for the single-body model, `recycle-classifier predict MODEL.onnx PHOTO` from process start to the
first result line, and the same with a three-line script. Medians; prints a table, appends to
bench/results/predict.jsonl and rewrites bench/results/predict.md. Run it under the CPU lock:

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_predict.py [--runs 30]
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'
TARGETS = {'onnx_one_ms': 15, 'onnx_batch_ms': 8, 'onnx_12mp_ms': 40, 'cold_start_s': 1.5, 'default_speedup': 3}


class TwoViews:
    "Factory for a torch module: bodies on the photo and its mirror image, features averaged, an MLP head"
    @staticmethod
    def make(bodies, n_classes):
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.bodies = nn.ModuleList(bodies)
                dims = [b(torch.zeros(1, 3, 64, 64)).shape[1] for b in self.bodies]
                self.head = nn.Sequential(nn.Linear(sum(dims), 256), nn.ReLU(), nn.Linear(256, n_classes))
                self.views = 2
            def forward(self, x):
                feats = []
                for b in self.bodies:
                    f = b(x)
                    if self.views == 2: f = (f + b(torch.flip(x, dims=[3]))) / 2
                    feats.append(f)
                return self.head(torch.cat(feats, 1))
        return Net()


def build_learner(arches, views, size=320):
    "A fastai learner on the sample: frozen bodies (pooled), `views` (1 or 2), MLP head trained one epoch"
    import torch
    from torch import nn
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize, Learner, Normalize
    from fastai.losses import CrossEntropyLossFlat
    from recycle_classifier.core import SAMPLE_DIR
    from recycle_classifier.layout import image_files
    from recycle_classifier.learner import SafePILImage
    from recycle_classifier.embed import frozen_body
    bodies, stats = [], None
    for a in arches:
        body, st, _ = frozen_body(a)
        stats = stats or st
        bodies.append(nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=Resize(size, method='squish'),
                    batch_tfms=Normalize.from_stats(*stats)).dataloaders(SAMPLE_DIR, bs=32, num_workers=0)
    net = TwoViews.make(bodies, len(dls.vocab)); net.views = views
    for p in net.bodies.parameters(): p.requires_grad_(False)
    learn = Learner(dls, net, loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 3e-3)
    learn.recycle_meta = dict(arch='+'.join(arches), size=size, views=views, resize='squish')
    return learn


def median_ms(f, runs, warmup=2):
    "Median wall time of `f()` in milliseconds"
    for _ in range(warmup): f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return round(statistics.median(ts) * 1000, 2)


def time_model(learn, onnx_path, int8_path, photos, big, runs):
    "Every timing for one model, in ms (batched ones per photo)"
    from recycle_classifier.onnx_predict import OnnxPredictor
    from recycle_classifier.onnx_export import fastai_probs
    from recycle_classifier.images import open_image
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    ours, q = OnnxPredictor(onnx_path), OnnxPredictor(int8_path)
    one, batch = photos[0], photos[:32]
    r = {}
    with learn.no_bar(), learn.no_logging():
        r['fastai_predict_one_ms'] = median_ms(lambda: learn.predict(one), runs)
        r['fastai_predict_12mp_ms'] = median_ms(lambda: learn.predict(big), max(3, runs // 5), 1)
        r['fastai_get_preds_batch_ms'] = round(median_ms(lambda: fastai_probs(learn, [open_image(p) for p in batch]),
                                                         max(3, runs // 5), 1) / len(batch), 2)
    r['onnx_one_ms'] = median_ms(lambda: list(ours.predict_paths([one])), runs)
    r['onnx_batch_ms'] = round(median_ms(lambda: list(ours.predict_paths(batch, bs=32)), max(3, runs // 5), 1) / len(batch), 2)
    r['onnx_12mp_ms'] = median_ms(lambda: list(ours.predict_paths([big])), runs)
    r['int8_one_ms'] = median_ms(lambda: list(q.predict_paths([one])), runs)
    r['int8_batch_ms'] = round(median_ms(lambda: list(q.predict_paths(batch, bs=32)), max(3, runs // 5), 1) / len(batch), 2)
    r['speedup_one_vs_fastai_predict'] = round(r['fastai_predict_one_ms'] / r['onnx_one_ms'], 1)
    r['int8'] = ours and q.meta.get('quantization')
    return r


def cold_start(onnx_path, photo, runs=5):
    "Seconds from process start to the first result line: the CLI, and a three-line script"
    script = ("from recycle_classifier.predictor import load_predictor\n"
              f"model = load_predictor({str(onnx_path)!r})\n"
              f"print(next(model.predict_paths([{str(photo)!r}])))\n")
    cmds = {'cli_s': [str(Path(sys.executable).parent/'recycle-classifier'), 'predict', str(onnx_path), str(photo)],
            'script_s': [sys.executable, '-c', script]}
    out = {}
    for k, cmd in cmds.items():
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            line = p.stdout.readline()
            ts.append(time.perf_counter() - t)
            p.wait()
            if p.returncode != 0 or not line: raise SystemExit(f'{k} failed: {p.stderr.read()[-800:]}')
        out[k] = round(statistics.median(ts), 3)
    out['torch_imported'] = subprocess.run([sys.executable, '-c', script.replace('print(', 'import sys; print("torch" in sys.modules, ')],
                                           capture_output=True, text=True).stdout.split()[0] == 'True'
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--runs', type=int, default=30, help='timed repetitions of each one-photo measure (default %(default)s)')
    a = ap.parse_args()
    import warnings; warnings.filterwarnings('ignore')
    from PIL import Image
    from recycle_classifier.core import SAMPLE_DIR
    from recycle_classifier.layout import image_files
    from recycle_classifier.onnx_export import export_onnx
    load = os.getloadavg()[0]
    photos = image_files(SAMPLE_DIR/'valid')
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp/'phone-12mp.jpg'
        Image.open(photos[0]).convert('RGB').resize((4000, 3000), Image.BICUBIC).save(big, quality=92)
        variants = {'single-body (Lite0 320, one view)': (['efficientnet_lite0'], 1),
                    'two bodies (Lite0+MobileNetV2 320, mirror view)': (['efficientnet_lite0', 'mobilenet_v2'], 2)}
        for name, (arches, views) in variants.items():
            learn = build_learner(arches, views)
            onnx_path = export_onnx(learn, tmp/f'{len(rows)}.onnx')
            int8 = export_onnx(learn, tmp/f'{len(rows)}.onnx', quantize=True)
            rows[name] = time_model(learn, onnx_path, int8, photos, big, a.runs)
            if not rows.get('cold'): rows['cold'] = cold_start(onnx_path, photos[0])
            print(name, json.dumps(rows[name]), flush=True)
    cold = rows.pop('cold')
    single = rows['single-body (Lite0 320, one view)']
    two = rows['two bodies (Lite0+MobileNetV2 320, mirror view)']
    met = {'onnx_one_ms': single['onnx_one_ms'] <= TARGETS['onnx_one_ms'],
           'onnx_batch_ms': single['onnx_batch_ms'] <= TARGETS['onnx_batch_ms'],
           'onnx_12mp_ms': single['onnx_12mp_ms'] <= TARGETS['onnx_12mp_ms'],
           'cold_start_s': cold['cli_s'] <= TARGETS['cold_start_s'],
           'default_speedup': two['speedup_one_vs_fastai_predict'] >= TARGETS['default_speedup']}
    rec = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'bench': 'predict',
           'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(), 'load_avg': load,
                       'load_avg_after': os.getloadavg()[0]},
           'setup': {'runs': a.runs, 'photos': '384 px TrashNet sample, valid', 'batch': 32, 'big': '4000x3000 JPEG q92'},
           'results': rows, 'cold_start': cold, 'targets': TARGETS, 'met': met}
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS/'predict.jsonl', 'a') as f: f.write(json.dumps(rec) + '\n')
    cols = [('fastai_predict_one_ms', 'fastai predict, 1 photo'), ('fastai_get_preds_batch_ms', 'fastai get_preds, per photo in 32'),
            ('onnx_one_ms', 'ONNX, 1 photo'), ('onnx_batch_ms', 'ONNX, per photo in 32'), ('fastai_predict_12mp_ms', 'fastai predict, 12 MP'),
            ('onnx_12mp_ms', 'ONNX, 12 MP'), ('int8_one_ms', 'int8, 1 photo'), ('int8_batch_ms', 'int8, per photo in 32'),
            ('speedup_one_vs_fastai_predict', 'ONNX vs fastai predict (x)')]
    lines = [f"# Prediction benchmark ({rec['time']}, {os.cpu_count()} CPUs, load {load:.1f})", '',
             'Medians in ms, file to probabilities, 384 px TrashNet sample photos (Thung & Yang 2017, MIT) unless 12 MP. '
             'Models: frozen ImageNet bodies + MLP head, one epoch on the sample (accuracy not meaningful; latency is). '
             '`python bench/bench_predict.py`.', '',
             '| measure | ' + ' | '.join(rows) + ' |', '|---|' + '---|' * len(rows)]
    lines += [f'| {label} | ' + ' | '.join(str(r[k]) for r in rows.values()) + ' |' for k, label in cols]
    lines += ['', f"int8 accuracy change (sample valid photos): " + '; '.join(
        f"{n}: {r['int8']['accuracy_fp32']} -> {r['int8']['accuracy_int8']}, agreement {r['int8']['agreement']}" for n, r in rows.items() if r.get('int8')),
        '', f"Cold start to first result (ONNX, single-body): `recycle-classifier predict` {cold['cli_s']} s, "
        f"three-line script {cold['script_s']} s; torch imported: {cold['torch_imported']}", '',
        'Targets: ' + ', '.join(f'{k} {TARGETS[k]}: {"met" if v else "NOT met"}' for k, v in met.items())]
    (RESULTS/'predict.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__': main()
