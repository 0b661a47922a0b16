"""N-way K-shot evaluation of few-shot classification: frozen ImageNet prototypes, episodically fine-tuned
prototypes and a Siamese network, on TrashNet (3-way, 6-way) and Fashion-MNIST (5-way), 1 and 5 shots.

Every cell is 600 episodes with 15 queries per class (support and query never share a photo); the result
is the mean accuracy with a 95% confidence interval. Fine-tuned and Siamese encoders are trained on base
classes that are never the classes of the episodes they are evaluated on:

- TrashNet 3-way: the 6 classes are split into two halves; train on one half, test on the other, both
  ways round (300 episodes each). Frozen prototypes are scored on exactly the same episodes.
- TrashNet 6-way: all 6 TrashNet classes are test classes, so the encoders are trained on Fashion-MNIST's
  base classes (a different domain): the only way to keep all six classes unseen.
- Fashion-MNIST 5-way: base classes T-shirt, pullover, coat, shirt, bag (train split, 300 photos each);
  novel classes trouser, dress, sandal, sneaker, ankle boot (test split, 100 photos each).

Also: the calibrated "none of these" threshold (5 known classes + 1 unknown) and the time to add a class
from 5 photos. Results: bench/results/fewshot.jsonl (appended) and bench/results/fewshot.md (rebuilt from
the jsonl's latest row per cell). Embeddings are cached under ~/.cache/recycle_classifier/fewshot-bench.

Usage: nice -n 10 .venv/bin/python bench/bench_fewshot.py [--backbones mobilenet_v2,efficientnet_lite0@320]
       [--skip-trained] [--steps 300] [--add-class-only]
"""
import argparse, gzip, hashlib, json, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT/'bench'))
import types  # noqa: E402
from recycle_classifier import fewshot as _fs  # noqa: E402
from recycle_classifier.features.embedder import Embedder  # noqa: E402
from recycle_classifier.base.images import open_image  # noqa: E402
from recycle_classifier.formats.protomodel import unit_features  # noqa: E402
import fewshot_research as _research  # noqa: E402

# the package's few-shot stage and the research code moved out of it (issue #12), under one name
fsl = types.SimpleNamespace(**{k: getattr(_fs, k) for k in _fs.__all__}, **{k: getattr(_research, k) for k in _research.__all__})
fsl.LITE_SIZES = {'efficientnet_lite0': 224, 'efficientnet_lite1': 240, 'efficientnet_lite2': 260}  # as trained on ImageNet
fsl.class_folders = _fs.support_files
# a private torch embedder: fine-tuning changes its body in place (the shared `get_embedder` ones must not change)
fsl.imagenet_embedder = lambda arch, size=None: Embedder(arch, size or fsl.LITE_SIZES.get(arch, 224), engine='torch-fp32')

TRASHNET = Path(os.environ.get('TRASHNET', ROOT.parent/'shared'/'datasets'/'trashnet'))
FMNIST = Path(os.environ.get('FASHION_MNIST', '/usr/share/datasets/fashion-mnist'))
FM_NAMES = ['T-shirt/top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot']
FM_BASE, FM_NOVEL = [0, 2, 4, 6, 8], [1, 3, 5, 7, 9]
TN_HALVES = (['cardboard', 'glass', 'metal'], ['paper', 'plastic', 'trash'])
CACHE = Path(os.environ.get('FEWSHOT_BENCH_CACHE', Path.home()/'.cache'/'recycle_classifier'/'fewshot-bench'))
OUT = ROOT/'bench'/'results'
PREFIX_N, EPISODES, QUERIES = 3, 600, 15  # features are cached before the last PREFIX_N blocks
N_TRAIN, LR = 1, 1e-3  # blocks fine-tuned (--train-blocks) and their learning rate

def log(*a): print(*a, file=sys.stderr, flush=True)

# ---------------------------------------------------------------- data
def trashnet():
    "Paths and labels of every TrashNet photo (train and valid merged), with the class names"
    folders = fsl.class_folders(TRASHNET)
    paths = [p for fs in folders.values() for p in fs]
    labels = np.concatenate([np.full(len(fs), i) for i, fs in enumerate(folders.values())])
    return paths, labels, list(folders)

def read_idx(path) -> np.ndarray:
    "An IDX file (MNIST format, gzipped) as a numpy array"
    with gzip.open(path, 'rb') as f: data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4+4*i:8+4*i], 'big') for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4+4*ndim).reshape(shape)

def fashion_mnist(split: str, classes, per_class: int, seed: int = 0):
    "A seeded class-balanced subset of Fashion-MNIST as RGB images and labels"
    pre = 'train' if split == 'train' else 't10k'
    x, y = read_idx(FMNIST/f'{pre}-images-idx3-ubyte.gz'), read_idx(FMNIST/f'{pre}-labels-idx1-ubyte.gz')
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes])
    return [Image.fromarray(x[i]).convert('RGB') for i in idx], y[idx].astype(int)

def embedder(spec: str):
    "A frozen ImageNet embedder from 'arch' or 'arch@size' (e.g. efficientnet_lite0@320)"
    arch, _, size = spec.partition('@')
    return fsl.imagenet_embedder(arch, int(size) if size else fsl.LITE_SIZES.get(arch, 224))

# ---------------------------------------------------------------- cached features
def cached(key: str, fn) -> torch.Tensor:
    "fn() computed once and kept in the cache folder as .npy"
    f = CACHE/f'{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy'
    if f.exists(): return torch.from_numpy(np.load(f))
    t = time.perf_counter(); x = fn(); log(f'  computed {key[:70]} in {time.perf_counter()-t:.0f} s')
    CACHE.mkdir(parents=True, exist_ok=True); np.save(f, x.numpy()); return x

def prefix_features(emb, name, images_fn, n):
    "Output of all but the last `N_TRAIN` blocks for `n` photos (cached before the last `PREFIX_N`)"
    frozen, _ = fsl.split_body(emb, PREFIX_N)
    x = cached(f'prefix|{emb.arch}|{PREFIX_N}|{emb.size}|{name}|{n}',
               lambda: fsl.frozen_features(emb, frozen, images_fn()).half()).float()
    middle = torch.nn.Sequential(*fsl.body_blocks(emb.body)[len(fsl.body_blocks(emb.body)) - PREFIX_N:-N_TRAIN])
    with torch.no_grad(): return torch.cat([middle(x[i:i+256]) for i in range(0, len(x), 256)]) if len(middle) else x

def full_embeddings(emb, name, images_fn, n):
    "Frozen embeddings of `n` photos, cached"
    return cached(f'embed|{emb.arch}|{emb.size}|{name}|{n}', lambda: unit_features(emb, images_fn()))

def open_all(paths):
    "Open photos (the benchmark's data is known to be readable)"
    return [open_image(p) for p in paths]

# ---------------------------------------------------------------- methods
def proto(z): return lambda s, q: fsl.proto_classify(z, s, q)

def cells(name, labels, classify, ways_list, classes=None, seed=0, episodes=EPISODES):
    "Per-episode accuracies for each (ways, shots) cell"
    out = {}
    for ways in ways_list:
        for shots in (1, 5):
            out[(ways, shots)] = fsl.episode_accuracies(labels, classify, ways, shots, QUERIES, episodes, seed, classes)
    return out

def record(rows, bench, method, backbone, accs_by_cell, **info):
    "Append one result row per cell"
    for (ways, shots), accs in accs_by_cell.items():
        rows.append(fsl.summarise(accs, benchmark=bench, method=method, backbone=backbone, ways=ways, shots=shots,
                                  queries=QUERIES, **info))
        log(f'{bench:14s} {method:22s} {ways}-way {shots}-shot: {rows[-1]["acc"]:.1f} ± {rows[-1]["ci95"]:.1f}')

def train_both(arch, feats, labels, steps, ways):
    "An episodically fine-tuned tail and a Siamese network trained on the same base-class features"
    ft = embedder(arch)
    fsl.episodic_finetune(ft, feats, labels, n_train=N_TRAIN, ways=ways, shots=5, queries=10, steps=steps, lr=LR)
    siam = fsl.train_siamese(embedder(arch), feats, labels, n_train=N_TRAIN, steps=steps, pairs=32, lr=LR)
    return ft, siam

def trained_rows(rows, arch, tn_feats, tn_y, tn_names, fm_base_feats, fm_base_y, fm_feats, fm_y, steps):
    "Fine-tuned prototypes and Siamese, always evaluated on classes their training never saw"
    ft_cells, si_cells, fr_cells = {}, {}, {}
    frozen_emb = embedder(arch)
    z_frozen = fsl.tail_embed(frozen_emb, tn_feats, N_TRAIN)
    for h, (train_half, test_half) in enumerate([TN_HALVES, TN_HALVES[::-1]]):
        tr = np.isin(tn_y, [tn_names.index(c) for c in train_half])
        test = [tn_names.index(c) for c in test_half]
        t = time.perf_counter()
        ft, siam = train_both(arch, tn_feats[torch.as_tensor(tr)], tn_y[tr], steps, ways=3)
        log(f'  trained on {"+".join(train_half)} in {time.perf_counter()-t:.0f} s')
        z_ft, z_si = fsl.tail_embed(ft, tn_feats, N_TRAIN), fsl.siamese_embed(siam, tn_feats)
        for cell_store, clf in [(ft_cells, proto(z_ft)), (fr_cells, proto(z_frozen)),
                                (si_cells, lambda s, q: fsl.siamese_classify(siam, z_si, s, q))]:
            for k, v in cells('', tn_y, clf, [3], classes=test, seed=h, episodes=EPISODES // 2).items():
                cell_store[k] = np.concatenate([cell_store.get(k, np.zeros(0)), v])
    split = 'train on one half of the classes, test on the other, both ways'
    record(rows, 'TrashNet', 'frozen prototypes', arch, fr_cells, novel=True, trained_on='ImageNet', split=split)
    record(rows, 'TrashNet', 'fine-tuned prototypes', arch, ft_cells, novel=True, trained_on='other TrashNet half', split=split)
    record(rows, 'TrashNet', 'Siamese', arch, si_cells, novel=True, trained_on='other TrashNet half', split=split)
    t = time.perf_counter()
    ft, siam = train_both(arch, fm_base_feats, fm_base_y, steps, ways=5)
    log(f'  trained on Fashion-MNIST base classes in {time.perf_counter()-t:.0f} s')
    fm_base = 'Fashion-MNIST base classes'
    for bench, feats, y, ways in [('TrashNet', tn_feats, tn_y, [6]), ('Fashion-MNIST', fm_feats, fm_y, [5])]:
        z_ft, z_si = fsl.tail_embed(ft, feats, N_TRAIN), fsl.siamese_embed(siam, feats)
        record(rows, bench, 'fine-tuned prototypes', arch, cells(bench, y, proto(z_ft), ways), novel=True, trained_on=fm_base)
        record(rows, bench, 'Siamese', arch, cells(bench, y, lambda s, q: fsl.siamese_classify(siam, z_si, s, q), ways),
               novel=True, trained_on=fm_base)

def time_add_class(arch, tn_paths, tn_y, tn_names, repeats=5) -> dict:
    "Seconds to add a class from 5 photo files (open, embed, prototype, recalibrate) to a 6-class model"
    emb = embedder(arch)
    rng = np.random.default_rng(0)
    model = _fs.fewshot_model({c: unit_features(emb, open_all([tn_paths[j] for j in rng.choice(np.flatnonzero(tn_y == i), 5)]))
                               for i, c in enumerate(tn_names)}, emb)
    times, cpu = [], []
    for r in range(repeats):
        files = [tn_paths[j] for j in rng.choice(np.flatnonzero(tn_y == r % 6), 5, replace=False)]
        t, c = time.perf_counter(), time.process_time()
        _fs.add_fewshot_class(model, f'new{r}', open_all(files))
        times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return dict(benchmark='add a class', backbone=arch, photos=5, repeats=repeats,
                median_s=round(statistics.median(times), 3), min_s=round(min(times), 3),
                median_cpu_s=round(statistics.median(cpu), 3),
                torch_threads=torch.get_num_threads(), load_avg=round(os.getloadavg()[0], 2))

# ---------------------------------------------------------------- report
def markdown(rows) -> str:
    "The results table: one row per method and backbone, one column per benchmark cell"
    latest = {}
    for r in rows: latest[(r['benchmark'], r.get('method'), r['backbone'], r.get('ways'), r.get('shots'), r.get('kind', 'acc'))] = r
    cols = [('TrashNet', 3, 1), ('TrashNet', 3, 5), ('TrashNet', 6, 1), ('TrashNet', 6, 5),
            ('Fashion-MNIST', 5, 1), ('Fashion-MNIST', 5, 5)]
    methods = sorted({(k[1], k[2]) for k in latest if k[0] in ('TrashNet', 'Fashion-MNIST')},
                     key=lambda m: (['frozen prototypes', 'fine-tuned prototypes', 'Siamese'].index(m[0]), m[1]))
    head = '| method | backbone | ' + ' | '.join(f'{b} {w}-way {s}-shot' for b, w, s in cols) + ' |'
    lines = [head, '|' + '---|' * (len(cols) + 2)]
    for m, b in methods:
        cell = lambda c: (lambda r: f'{r["acc"]:.1f} ± {r["ci95"]:.1f}' if r else '—')(latest.get((c[0], m, b, c[1], c[2], 'acc')))
        lines.append(f'| {m} | {b} | ' + ' | '.join(cell(c) for c in cols) + ' |')
    notes = ['', 'Mean accuracy (%) ± 95% CI over 600 episodes, 15 queries per class; support and query never share a photo.',
             'Frozen: ImageNet weights, nothing trained on these classes. TrashNet 3-way: the classes are split in halves '
             '(cardboard/glass/metal, paper/plastic/trash); fine-tuned and Siamese encoders are trained on one half and '
             'tested on the other, both ways round (300 + 300 episodes), and the frozen row uses the same episodes. '
             'TrashNet 6-way and Fashion-MNIST 5-way: encoders trained on the Fashion-MNIST base classes (T-shirt, '
             'pullover, coat, shirt, bag); Fashion-MNIST episodes use only the novel classes (trouser, dress, sandal, '
             'sneaker, ankle boot). A backbone written arch@N embeds photos at N px; a bare name embeds at the size it was '
             'trained at on ImageNet (224 px for mobilenet_v2 and efficientnet_lite0). The package\'s few-shot default is '
             'efficientnet_lite0@320. Fine-tuning trains the last block of the body (in MobileNetV2 and EfficientNet-Lite0 alike, the 1x1 '
             'convolution to 1,280 channels) with the Prototypical Networks loss; the Siamese encoder is the same block, followed by L1 '
             'distance, a linear layer and a sigmoid, trained on same/different pairs. The linear layer\'s weights '
             'are kept at or below zero (a learned weighted L1 distance): left unconstrained as in Koch et al. 2015, '
             'the network trained on Fashion-MNIST scored 11.8 ± 0.3 and 8.6 ± 0.3 on TrashNet 6-way 1- and '
             '5-shot (below the 16.7% of chance), 37.5 ± 0.7 and 39.6 ± 0.5 on Fashion-MNIST 5-way, and 55.4 ± 1.0 '
             'and 63.3 ± 0.7 on TrashNet 3-way (same episodes, same seeds).',
             'Data: TrashNet (Thung & Yang 2016, MIT license), its train and valid splits (2,096 photos; the test split is not used); Fashion-MNIST (Xiao et al. 2017, MIT license).']
    extra = [r for r in latest.values() if r['benchmark'] in ('open set', 'add a class')]
    for r in extra:
        if r['benchmark'] == 'open set':
            notes.append(f'"None of these" threshold, TrashNet, {r["backbone"]}, {r["ways"]} known classes + 1 unknown, '
                         f'{r["shots"]}-shot, {r["episodes"]} episodes: {r["known_correct"]:.1f}% of known-class queries '
                         f'accepted and correct, {r["unknown_rejected"]:.1f}% of unknown-class queries rejected.')
        else:
            notes.append(f'Adding a class from 5 photo files ({r["backbone"]}, open + embed + recalibrate): median '
                         f'{r["median_s"]:.2f} s wall-clock, best {r["min_s"]:.2f} s, over {r["repeats"]} runs with '
                         f'{r["torch_threads"]} CPU threads ({r["median_cpu_s"]:.2f} CPU-seconds in all threads; load '
                         f'average {r["load_avg"]} on a 2-core machine{" shared with other jobs" if r["load_avg"] > 2.5 else ""}).')
    return '\n'.join(lines + notes) + '\n'

def main():
    global N_TRAIN
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--backbones', default='efficientnet_lite0@320,mobilenet_v2', help='comma-separated ImageNet backbones, each arch or arch@size')
    ap.add_argument('--skip-trained', action='store_true', help='frozen prototypes only')
    ap.add_argument('--steps', type=int, default=300, help='training episodes / pair batches')
    ap.add_argument('--train-blocks', type=int, default=N_TRAIN, help=f'last blocks to train (at most {PREFIX_N})')
    ap.add_argument('--report-only', action='store_true', help='rebuild fewshot.md from fewshot.jsonl')
    ap.add_argument('--add-class-only', action='store_true', help='only time adding a class (no episodes)')
    args = ap.parse_args()
    N_TRAIN = args.train_blocks
    OUT.mkdir(parents=True, exist_ok=True)
    jsonl = OUT/'fewshot.jsonl'
    if args.add_class_only:
        tn_paths, tn_y, tn_names = trashnet()
        env = dict(host=platform.node(), torch=torch.__version__, threads=torch.get_num_threads(), date=time.strftime('%Y-%m-%d'))
        with open(jsonl, 'a') as f:
            for arch in args.backbones.split(','):
                row = dict(time_add_class(arch, tn_paths, tn_y, tn_names), **env); log(row); f.write(json.dumps(row) + '\n')
    elif not args.report_only:
        tn_paths, tn_y, tn_names = trashnet()
        fm_ims = lambda: fashion_mnist('test', FM_NOVEL, 100)[0]
        fm_y = fashion_mnist('test', FM_NOVEL, 100)[1]
        fm_base_y = fashion_mnist('train', FM_BASE, 300)[1]
        env = dict(host=platform.node(), torch=torch.__version__, threads=torch.get_num_threads(), steps=args.steps,
                   train_blocks=N_TRAIN, lr=LR,
                   date=time.strftime('%Y-%m-%d'))
        for arch in args.backbones.split(','):
            rows = []
            emb = embedder(arch)
            log(f'{arch}: {len(tn_paths)} TrashNet photos, {len(fm_y)} Fashion-MNIST novel-class photos')
            if not args.skip_trained:  # the prefix is shared by the frozen, fine-tuned and Siamese rows
                tn_feats = prefix_features(emb, 'trashnet', lambda: open_all(tn_paths), len(tn_paths))
                fm_feats = prefix_features(emb, 'fmnist-novel-test-100', fm_ims, len(fm_y))
                z_tn, z_fm = fsl.tail_embed(emb, tn_feats, N_TRAIN), fsl.tail_embed(emb, fm_feats, N_TRAIN)
            else:
                z_tn = full_embeddings(emb, 'trashnet', lambda: open_all(tn_paths), len(tn_paths))
                z_fm = full_embeddings(emb, 'fmnist-novel-test-100', fm_ims, len(fm_y))
            record(rows, 'TrashNet', 'frozen prototypes', arch, cells('TrashNet', tn_y, proto(z_tn), [6]), novel=True,
                   trained_on='ImageNet', **env)
            record(rows, 'Fashion-MNIST', 'frozen prototypes', arch, cells('FM', fm_y, proto(z_fm), [5]), novel=True,
                   trained_on='ImageNet', **env)
            rows.append(dict(fsl.open_set_episodes(z_tn, tn_y, 5, 5, QUERIES, EPISODES), benchmark='open set',
                             method='frozen prototypes', backbone=arch, kind='open', **env))
            log(rows[-1])
            if not args.skip_trained:
                fm_base_feats = prefix_features(emb, 'fmnist-base-train-300', lambda: fashion_mnist('train', FM_BASE, 300)[0],
                                                len(fm_base_y))
                trained_rows(rows, arch, tn_feats, tn_y, tn_names, fm_base_feats, fm_base_y, fm_feats, fm_y, args.steps)
                for r in rows: r.update({k: v for k, v in env.items() if k not in r})
            else:  # 3-way on the same halves as the trained rows, for comparison
                fr = {}
                for h, half in enumerate(TN_HALVES[::-1]):
                    for k, v in cells('', tn_y, proto(z_tn), [3], classes=[tn_names.index(c) for c in half], seed=h,
                                      episodes=EPISODES // 2).items():
                        fr[k] = np.concatenate([fr.get(k, np.zeros(0)), v])
                record(rows, 'TrashNet', 'frozen prototypes', arch, fr, novel=True, trained_on='ImageNet', **env)
            rows.append(dict(time_add_class(arch, tn_paths, tn_y, tn_names), **env))
            log(rows[-1])
            with open(jsonl, 'a') as f:
                for r in rows: f.write(json.dumps(r) + '\n')
    rows = [json.loads(l) for l in jsonl.read_text().splitlines() if l.strip()]
    (OUT/'fewshot.md').write_text(markdown(rows))
    print((OUT/'fewshot.md').read_text())

if __name__ == '__main__':
    main()
