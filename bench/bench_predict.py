"""Benchmark prediction with REAL models: fastai's own paths against the torch-free ONNX predictor (onnxruntime and
OpenVINO), side by side in one run, and accuracy against latency for the variants one can export.

Models: the default model `recycle-classifier train DATA --out DEFAULT.pkl` writes (two frozen bodies,
EfficientNet-Lite0@384 + MobileNetV2@320, on the photo and its mirror image, MLP head), and a single-body model
(`train DATA --arch efficientnet_lite0 --size 320 --out SINGLE.pkl`). From each it exports, in a temporary folder:
the model as trained (two views) and with the mirror view dropped (one view, the same head); and int8 copies
(onnxruntime static quantisation) of the one-view single-body model and of the default. It measures:
  accuracy of every variant on DATA/valid (TrashNet valid, Thung & Yang 2017, MIT: 328 photos);
  latency, file to probabilities, on 384 px photos: one photo (median of --runs), and per photo in a batch of 32,
  with onnxruntime and OpenVINO (fp32; bf16 once, opt-in), in a separate process with torch blocked (as a service
  runs; torch's idle threads beside the runtimes' made timings erratic), in --rounds rounds that each time every
  variant in turn (this machine has slow spells of seconds), medians over rounds;
  fastai `learn.predict` one photo and `get_preds` on 32 for the default and the single-body model;
  a 4000x3000 JPEG with the single-body model; cold start of `recycle-classifier predict` to the first result;
  the largest difference between fastai's probabilities and ours on the embedded sample's photos.
Prints tables, appends one record to bench/results/predict.jsonl and rewrites bench/results/predict.md.
Run it under the CPU lock (about 7 minutes on 2 cores):

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_predict.py --default DEFAULT.pkl \\
        --single SINGLE.pkl --data ../shared/datasets/trashnet
"""
import argparse, importlib.util, json, os, platform, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'
TARGETS = {'single_one_ms': 15, 'single_batch_ms': 8, 'single_12mp_ms': 40, 'cold_start_s': 1.5, 'default_speedup': 3}
HAVE_OV = importlib.util.find_spec('openvino') is not None
RUNTIMES = ['onnxruntime'] + (['openvino'] if HAVE_OV else [])


def median_ms(f, runs, warmup=2):
    "Median wall time of `f()` in milliseconds"
    for _ in range(warmup): f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return round(statistics.median(ts) * 1000, 2)


def accuracy(pred, labelled) -> float:
    "Top-1 accuracy of an OnnxPredictor on (path, label) pairs"
    recs = list(pred.predict_paths([p for p, _ in labelled]))
    return round(100 * sum(r.get('label') == y for r, (_, y) in zip(recs, labelled)) / len(labelled), 2)


def latency(p, photos, runs) -> dict:
    "One photo and per photo in 32, file to probabilities, in ms, for an OnnxPredictor"
    batch = photos[:32]
    return {'one_ms': median_ms(lambda: list(p.predict_paths(photos[:1])), runs),
            'batch_ms': round(median_ms(lambda: list(p.predict_paths(batch, bs=32)), max(3, runs // 5), 1) / len(batch), 2)}


def latency_child(spec: dict) -> dict:
    """Every ONNX latency, in this process with torch blocked (as in a service): `spec['rounds']` rounds, each timing
    every variant on every runtime in turn, so slow spells of the machine hit all of them; medians over rounds"""
    sys.modules['torch'] = None
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    photos, runs = [Path(p) for p in spec['photos']], spec['runs']
    preds = {(name, rt, prec): OnnxPredictor(f, runtime=rt, **({'precision': prec} if prec != 'fp32' else {}))
             for name, f in spec['files'].items() for rt in spec['runtimes'] for prec in (['fp32', 'bf16'] if rt == 'openvino' and name == spec.get('bf16') else ['fp32'])}
    big = {rt: preds[(spec['single'], rt, 'fp32')] for rt in spec['runtimes']}   # the single-body model, on a 12 MP photo
    got = {k: [] for k in preds}
    got_big = {rt: [] for rt in big}
    for _ in range(spec['rounds']):
        for k, p in preds.items(): got[k].append(latency(p, photos, runs))
        for rt, p in big.items(): got_big[rt].append(median_ms(lambda: list(p.predict_paths([spec['big']])), runs))
    med = lambda xs, key: round(statistics.median(x[key] for x in xs), 2)
    out = {'variants': {}, 'bf16': {}, 'big_12mp_ms': {rt: round(statistics.median(v), 2) for rt, v in got_big.items()}}
    for (name, rt, prec), xs in got.items():
        r = {'one_ms': med(xs, 'one_ms'), 'batch_ms': med(xs, 'batch_ms'), 'rounds_one_ms': [x['one_ms'] for x in xs],
             'rounds_batch_ms': [x['batch_ms'] for x in xs]}
        if prec == 'bf16': out['bf16'] = r
        else: out['variants'].setdefault(name, {})[rt] = r
    return out


def run_latency_child(spec: dict) -> dict:
    "`latency_child` in a fresh interpreter (no torch, no fastai threads next to the runtimes')"
    r = subprocess.run([sys.executable, __file__, '--latency-child', json.dumps(spec)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0: raise SystemExit(f'the latency run failed: {r.stderr[-2000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def fastai_latency(learn, photos, runs) -> dict:
    "fastai `learn.predict` one photo and `get_preds` per photo in 32, in ms"
    from recycle_classifier.formats.onnx_export import fastai_probs
    from recycle_classifier.base.images import open_image
    batch = photos[:32]
    with learn.no_bar(), learn.no_logging():
        return {'fastai_predict_ms': median_ms(lambda: learn.predict(photos[0]), max(5, runs // 2), 1),
                'fastai_get_preds_ms': round(median_ms(lambda: fastai_probs(learn, [open_image(p) for p in batch]), 2, 1) / len(batch), 2)}


def fastai_diff(learn, onnx_path, runtime) -> float:
    "Largest |fastai - ours| probability on the embedded sample's 60 validation photos"
    import numpy as np
    from recycle_classifier.base.core import SAMPLE_DIR
    from recycle_classifier.base.layout import image_files
    from recycle_classifier.base.images import open_image
    from recycle_classifier.formats.onnx_export import fastai_probs
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    ims = [open_image(p) for p in image_files(SAMPLE_DIR/'valid')]
    ours = OnnxPredictor(onnx_path, draft=False, runtime=runtime).predict_probs(ims)
    return float(np.abs(fastai_probs(learn, ims) - ours).max())


def cold_start(onnx_path, photo, runs=5) -> dict:
    "Seconds from process start to the first result line: the CLI, and a three-line script"
    script = ("from recycle_classifier.formats.predictor import load_predictor\n"
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
    probe = script.replace('print(', 'import sys; print("torch" in sys.modules, ')
    out['torch_imported'] = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True).stdout.split()[0] == 'True'
    return out


def export_variants(learn, name, tmp, valid, int8: bool) -> dict:
    "ONNX files for `learn` as trained and with one view (mirror dropped); int8 of the one-view one if asked"
    from recycle_classifier.formats.onnx_export import export_onnx, quantize_onnx
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    out, views = {}, tuple(learn.model.views)
    if len(views) > 1: out[f'{name}, {len(views)} views'] = export_onnx(learn, tmp/f'{name}-2v.onnx')
    learn.model.views = ('orig',)
    out[f'{name}, 1 view'] = one = export_onnx(learn, tmp/f'{name}-1v.onnx')
    if int8: out[f'{name}, 1 view, int8'] = quantize_onnx(one, check_data=valid)
    learn.model.views = views
    return out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == '--latency-child':
        import warnings; warnings.filterwarnings('ignore')
        print(json.dumps(latency_child(json.loads(sys.argv[2])))); return
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--default', type=Path, required=True, help='the default model (.pkl from `recycle-classifier train`)')
    ap.add_argument('--single', type=Path, required=True, help='a single-body model (.pkl, train --arch efficientnet_lite0 --size 320)')
    ap.add_argument('--data', type=Path, default=ROOT.parent/'shared'/'datasets'/'trashnet', help='dataset with valid/<class>/ (default %(default)s)')
    ap.add_argument('--runs', type=int, default=15, help='timed repetitions of each one-photo measure (default %(default)s)')
    ap.add_argument('--rounds', type=int, default=3, help='rounds of ONNX latency measures, interleaved across variants (default %(default)s)')
    a = ap.parse_args()
    import warnings; warnings.filterwarnings('ignore')
    from PIL import Image
    from recycle_classifier.base.core import SAMPLE_DIR
    from recycle_classifier.base.layout import image_files
    from recycle_classifier.formats.learner import load_learner
    from recycle_classifier.formats.onnx_export import labelled_photos
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load = os.getloadavg()[0]
    photos, valid = image_files(SAMPLE_DIR/'valid'), a.data/'valid'
    labelled = labelled_photos(valid)
    learns = {'default': load_learner(a.default), 'single': load_learner(a.single)}
    rec = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'bench': 'predict',
           'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(), 'load_avg': load,
                       'runtimes': {'onnxruntime': __import__('onnxruntime').__version__,
                                    **({'openvino': __import__('openvino').__version__} if HAVE_OV else {})}},
           'setup': {'runs': a.runs, 'rounds': a.rounds, 'photos': '384 px TrashNet sample photos (valid)', 'batch': 32,
                     'big': '4000x3000 JPEG q92', 'accuracy_on': f'{valid} ({len(labelled)} photos)',
                     'default': a.default.name, 'single': a.single.name}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp/'phone-12mp.jpg'
        Image.open(photos[0]).convert('RGB').resize((4000, 3000), Image.BICUBIC).save(big, quality=92)
        files = {**export_variants(learns['default'], 'default (Lite0@384+MobileNetV2@320)', tmp, valid, True),
                 **export_variants(learns['single'], 'single body (Lite0@320)', tmp, valid, True)}
        single = files['single body (Lite0@320), 1 view']
        default = files['default (Lite0@384+MobileNetV2@320), 2 views']
        variants = {}
        for name, f in files.items():
            v = variants[name] = {'mb': round(f.stat().st_size / 2**20, 1)}
            q = OnnxPredictor(f, runtime='onnxruntime').meta.get('quantization')
            v['accuracy'] = round(100 * q['accuracy_int8'], 2) if q else accuracy(OnnxPredictor(f), labelled)
            if q: v['int8_vs_fp32'] = {k: q[k] for k in ('accuracy_fp32', 'accuracy_int8', 'agreement', 'max_prob_change')}
        lat = run_latency_child({'files': {n: str(f) for n, f in files.items()}, 'runtimes': RUNTIMES, 'photos': [str(p) for p in photos],
                                 'runs': a.runs, 'rounds': a.rounds, 'single': 'single body (Lite0@320), 1 view', 'big': str(big),
                                 'bf16': 'single body (Lite0@320), 1 view' if HAVE_OV else None})
        for name, v in variants.items():
            v.update(lat['variants'][name])
            print(name, json.dumps(v), flush=True)
        rec['variants'], rec['big_12mp_ms'] = variants, lat['big_12mp_ms']
        if HAVE_OV:
            bf = OnnxPredictor(single, runtime='openvino', precision='bf16')
            fp = OnnxPredictor(single, runtime='openvino')
            from recycle_classifier.base.images import open_image
            ims = [open_image(p, draft=fp.draft) for p in photos]
            import numpy as np
            rec['bf16'] = {**lat['bf16'], 'accuracy': accuracy(bf, labelled), 'accuracy_fp32': variants['single body (Lite0@320), 1 view']['accuracy'],
                           'max_prob_change_vs_fp32': round(float(np.abs(bf.predict_probs(ims) - fp.predict_probs(ims)).max()), 4)}
            print('bf16', rec['bf16'], flush=True)
        rec['fastai'] = {'default': fastai_latency(learns['default'], photos, a.runs)}
        learns['single'].model.views = ('orig',)
        rec['fastai']['single'] = fastai_latency(learns['single'], photos, a.runs)
        rec['fastai_max_diff'] = {f'{m} {rt}': fastai_diff(learns[m], f, rt) for m, f in (('default', default), ('single', single))
                                  for rt in RUNTIMES}
        rec['cold_start'] = cold_start(single, photos[0])
        print('fastai', rec['fastai'], rec['fastai_max_diff'], rec['big_12mp_ms'], rec['cold_start'], flush=True)
    best = lambda v, k: min(v[rt][k] for rt in RUNTIMES)
    s1 = variants['single body (Lite0@320), 1 view']
    d = variants['default (Lite0@384+MobileNetV2@320), 2 views']
    rec['met'] = {'single_one_ms': best(s1, 'one_ms') <= TARGETS['single_one_ms'],
                  'single_batch_ms': best(s1, 'batch_ms') <= TARGETS['single_batch_ms'],
                  'single_12mp_ms': min(rec['big_12mp_ms'].values()) <= TARGETS['single_12mp_ms'],
                  'cold_start_s': rec['cold_start']['cli_s'] <= TARGETS['cold_start_s'],
                  'default_speedup': rec['fastai']['default']['fastai_predict_ms'] / best(d, 'one_ms') >= TARGETS['default_speedup']}
    rec['targets'] = TARGETS
    rec['machine']['load_avg_after'] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS/'predict.jsonl', 'a') as f: f.write(json.dumps(rec) + '\n')
    (RESULTS/'predict.md').write_text(report(rec))
    print(report(rec))


def report(rec) -> str:
    "predict.md"
    v, fa = rec['variants'], rec['fastai']
    rts = [rt for rt in RUNTIMES if rt in next(iter(v.values()))]
    lines = [f"# Prediction benchmark ({rec['time']}, {rec['machine']['cpus']} CPUs, load {rec['machine']['load_avg']:.1f})", '',
             'Real models trained on TrashNet (Thung & Yang 2017, MIT) with `recycle-classifier train`; accuracy on its '
             f"valid split ({rec['setup']['accuracy_on']}); latency in ms, median, file to probabilities on 384 px photos "
             f"(batched: per photo in a batch of 32), in a process without torch, median of {rec['setup'].get('rounds', 1)} rounds "
             'that each time every variant in turn. Runtimes: ' + ', '.join(f'{k} {x}' for k, x in rec['machine']['runtimes'].items()) +
             '; fp32 unless int8. `python bench/bench_predict.py` (under the CPU lock).', '',
             '## Accuracy against latency', '',
             '| variant | accuracy % | MB | ' + ' | '.join(f'{rt} 1 photo | {rt} batched' for rt in rts) + ' |',
             '|---|---|---|' + '---|---|' * len(rts)]
    for name, x in v.items():
        lines.append(f"| {name} | {x['accuracy']} | {x['mb']} | " + ' | '.join(f"{x[rt]['one_ms']} | {x[rt]['batch_ms']}" for rt in rts) + ' |')
    lines += ['', '## fastai against ours', '', '| model | fastai predict, 1 photo | fastai get_preds, per photo in 32 | '
              'ours best, 1 photo | ours best, batched | speed-up, 1 photo |', '|---|---|---|---|---|---|']
    for m, name in (('default', 'default (Lite0@384+MobileNetV2@320), 2 views'), ('single', 'single body (Lite0@320), 1 view')):
        one, bat = min(v[name][rt]['one_ms'] for rt in rts), min(v[name][rt]['batch_ms'] for rt in rts)
        lines.append(f"| {name} | {fa[m]['fastai_predict_ms']} | {fa[m]['fastai_get_preds_ms']} | {one} | {bat} | "
                     f"{fa[m]['fastai_predict_ms'] / one:.1f}x |")
    lines += ['', 'Largest |fastai get_preds - ours| probability on the sample\'s 60 valid photos (full-size decoding): ' +
              ', '.join(f'{k}: {x:.1e}' for k, x in rec['fastai_max_diff'].items()) + '.', '',
              f"12-megapixel JPEG, single body, 1 view: " + ', '.join(f'{rt} {x} ms' for rt, x in rec['big_12mp_ms'].items()) + '.', '',
              f"Cold start to first result (ONNX, single body): `recycle-classifier predict` {rec['cold_start']['cli_s']} s, "
              f"three-line script {rec['cold_start']['script_s']} s; torch imported: {rec['cold_start']['torch_imported']}."]
    if rec.get('bf16'):
        b = rec['bf16']
        lines += ['', f"OpenVINO bf16 (opt-in, `precision='bf16'`), single body, 1 view: 1 photo {b['one_ms']} ms, batched "
                  f"{b['batch_ms']} ms; accuracy {b['accuracy']}% (fp32 {b['accuracy_fp32']}%); probabilities change by up to "
                  f"{b['max_prob_change_vs_fp32']}."]
    ints = {n: x['int8_vs_fp32'] for n, x in v.items() if x.get('int8_vs_fp32')}
    if ints: lines += ['', 'int8 (onnxruntime static quantisation, never applied silently): ' + '; '.join(
        f"{n}: accuracy {q['accuracy_fp32']:.1%} -> {q['accuracy_int8']:.1%}, same top class {q['agreement']:.1%}, "
        f"probabilities change by up to {q['max_prob_change']}" for n, q in ints.items()) + '.']
    lines += ['', 'Targets (single body = Lite0@320, 1 view; best runtime): ' +
              ', '.join(f"{k} {rec['targets'][k]}: {'met' if ok else 'NOT met'}" for k, ok in rec['met'].items()) + '.']
    q8 = v.get('single body (Lite0@320), 1 view, int8')
    if q8:
        one, bat = min(q8[rt]['one_ms'] for rt in rts), min(q8[rt]['batch_ms'] for rt in rts)
        lines += ['', f"Its int8 copy (`export --quantize`, opt-in; accuracy {q8['accuracy']}% against {v['single body (Lite0@320), 1 view']['accuracy']}% "
                  f"in fp32): 1 photo {one} ms, batched {bat} ms: single_one_ms {'met' if one <= rec['targets']['single_one_ms'] else 'NOT met'}, "
                  f"single_batch_ms {'met' if bat <= rec['targets']['single_batch_ms'] else 'NOT met'}."]
    return '\n'.join(lines) + '\n'


if __name__ == '__main__': main()
