"""Ray batch prediction and embedding on a local Ray (127.0.0.1 only, no dashboard, 2 CPUs), two-process training
with gloo, and `train --device`: records equal plain prediction's, a killed job resumes without classifying finished
photos again, the cache Ray fills holds exactly the plain features and train finds them all there, the distributed
export is a normal one, and a GPU that is not there is one clear line."""
import json, os, shutil, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from recycle_classifier.base.core import SAMPLE_DIR
from recycle_classifier.base.fileio import read_jsonl
from recycle_classifier.base.layout import image_files
from recycle_classifier.formats.predictor import load_predictor
from recycle_classifier.batch.embed import embed_ray
from recycle_classifier.batch.predict import predict_ray, read_records

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(path):
    "A tiny exported learner on the sample (32 px): real fastai inference in a second, no training"
    from torch import nn
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize, Learner
    from recycle_classifier.data import SafePILImage
    from recycle_classifier.formats.learner import export_learner
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=Resize(32, method='squish')).dataloaders(SAMPLE_DIR, bs=16)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6))
    return export_learner(Learner(dls, net), path)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    "The sample's validation photos, then an empty file, an HTML page named .jpg and a truncated JPEG; the model as ONNX and .pkl"
    d = tmp_path_factory.mktemp('scale')
    bad = d/'bad'; bad.mkdir()
    (bad/'empty.jpg').write_bytes(b'')
    (bad/'page.jpg').write_text('<!doctype html><html><body>Not found</body></html>')
    good = image_files(SAMPLE_DIR/'valid')
    (bad/'truncated.jpg').write_bytes(good[0].read_bytes()[:3000])
    listing = d/'photos.txt'
    listing.write_text(f'# the sample, then the bad files\n{SAMPLE_DIR/"valid"}\n\n{bad}\n')
    files = good + sorted(bad.iterdir())
    from recycle_classifier.formats.onnx_export import export_onnx
    pkl = tiny_model(d/'tiny.pkl')
    return dict(dir=d, listing=listing, files=files, model=export_onnx(pkl), pkl=pkl)   # ONNX: what actors are meant to run


def plain(model, files):
    "What `predict --json` prints for `files`"
    return list(load_predictor(model).predict_paths(files))


KILLER = textwrap.dedent('''
    import os, signal, sys, psutil
    from recycle_classifier.batch import predict as scale
    model, listing, out, pids = sys.argv[1:5]
    calls = []
    def append(self, records):
        calls.append(1)
        if len(calls) == 3:   # the third batch: half a line reaches the disk, then the process dies
            with open(self.journal, 'a') as f: f.write(scale.json.dumps(records[0])[:40])
            open(pids, 'w').write(' '.join(f'{p.pid}:{p.name()}' for p in psutil.Process().children(recursive=True)))
            os.kill(os.getpid(), signal.SIGKILL)
        scale.append_jsonl(self.journal, *records)
    scale.RecordFile.append = append
    scale.predict_ray(model, [listing], out, actors=1, batch_size=4, progress=False)
''')


def test_killed_job_resumes(photos, local_ray, tmp_path):
    "SIGKILL part-way (a cut line on disk): the re-run (on the running Ray) classifies only the rest; the killed job's Ray died with it"
    import psutil
    out, pids = tmp_path/'preds.jsonl', tmp_path/'pids'
    r = subprocess.run([sys.executable, '-c', KILLER, photos['model'], photos['listing'], out, pids],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == -9, r.stdout + r.stderr
    kept = read_jsonl(out)
    assert len(kept) >= 2 and not out.read_text().endswith('\n')        # two whole batches and a cut line
    def alive(names=('gcs_server', 'raylet')):
        procs = [tuple(x.split(':', 1)) for x in pids.read_text().split()]
        return [int(p) for p, name in procs if any(n in name for n in names) and psutil.pid_exists(int(p))
                and psutil.Process(int(p)).status() != psutil.STATUS_ZOMBIE]
    for _ in range(120):   # Ray's core notices its driver died and stops within seconds
        if not alive(): break
        time.sleep(0.5)
    assert not alive(), f"Ray's core outlived the killed job by a minute: {alive()}"
    for p in alive(('',)):   # idle workers Ray would reap later: the test stops them now
        try: psutil.Process(p).kill()
        except psutil.NoSuchProcess: pass
    res = predict_ray(photos['model'], [photos['listing']], out, actors=2, batch_size=8, progress=False)
    n = len(photos['files'])
    assert res['skipped'] == len(kept) and res['classified'] == n - len(kept) and res['errors'] == 3, res
    assert read_records(out) == plain(photos['model'], photos['files'])
    again = predict_ray(photos['model'], [photos['listing']], out, progress=False)   # only the bad files are tried again
    assert again['classified'] == 3 and again['skipped'] == n - 3
    assert read_records(out) == plain(photos['model'], photos['files'])


@pytest.fixture(scope='module')
def local_ray():
    "A local Ray on 127.0.0.1 only, no dashboard, 2 CPUs; stopped by the test"
    import ray
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    ray.init(address='local', _node_ip_address='127.0.0.1', include_dashboard=False, num_cpus=2)
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()


@pytest.mark.parametrize('suffix,model', [('.jsonl', 'pkl'), ('.parquet', 'model')])
def test_records_equal_plain_predict(photos, local_ray, tmp_path, suffix, model):
    "Folders and bad files through two actors (a fastai or an ONNX model): the same records, in the same order, as plain prediction"
    out = tmp_path/f'preds{suffix}'
    res = predict_ray(photos[model], [SAMPLE_DIR/'valid', photos['dir']/'bad'], out, actors=2, batch_size=8,
                      progress=False)
    assert res['classified'] == len(photos['files']) and res['errors'] == 3
    recs = read_records(out)
    assert recs == plain(photos[model], photos['files'])
    assert [r['error'] for r in recs[-3:-1]] == ['not an image (unrecognised or empty file)'] * 2
    assert recs[-1]['error'].startswith('corrupt or truncated image')
    assert local_ray.is_initialized()     # a Ray it did not start is left running


def test_embed_ray_fills_the_cache_train_reads(photos, local_ray, tmp_path):
    "Two actors fill the feature cache: exactly the features the plain cache path computes, and `train` embeds nothing"
    import numpy as np
    from recycle_classifier.features.embedder import VIEWS, get_embedder
    from recycle_classifier.features.cache import FeatureCache
    from recycle_classifier.train.run import train
    spec, cache = 'mobilenet_v2@64', tmp_path/'cache'
    r = embed_ray([SAMPLE_DIR, photos['dir']/'bad'], bodies=spec, cache_dir=cache, actors=2, batch_size=16, progress=False)
    files = image_files(SAMPLE_DIR)
    assert (r['photos'], r['embedded'], r['cached'], len(r['errors'])) == (len(files) + 3, len(files), 0, 3), r
    assert r['errors'][str(photos['dir']/'bad'/'empty.jpg')] == 'not an image (unrecognised or empty file)'
    emb = get_embedder(spec)
    from_ray = FeatureCache(cache)
    got, ok, _ = from_ray.features(emb, files, VIEWS)
    assert from_ray.stats == dict(hits=len(files), misses=0, rebuilt=0)     # read back, none computed here
    want, want_ok, _ = FeatureCache(tmp_path/'plain').features(emb, files, VIEWS, bs=8)   # as train computes them
    assert ok == want_ok and got.shape == (len(files), len(VIEWS), emb.dim) and np.array_equal(got, want)
    _, m = train(SAMPLE_DIR, bodies=spec, epochs=1, cache_dir=cache, out=tmp_path/'m.pkl', verbose=False)
    assert (m['cache_hits'], m['cache_misses']) == (len(files), 0)


def test_train_device(tmp_path, capsys):
    "`train --device cuda` where torch sees no GPU: exit 2 and one line saying so, before any work"
    import torch
    from recycle_classifier.cli import main
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    assert main(['train', str(SAMPLE_DIR), '--device', 'cuda', '--out', str(tmp_path/'m.pkl')]) == 2
    said = capsys.readouterr()
    assert said.err.startswith('error: --device cuda: no CUDA GPU is visible') and len(said.err.splitlines()) == 1, said.err
    assert said.out == '' and not (tmp_path/'m.pkl').exists()     # said before the dataset was read


def test_missing_ray_says_how_to_install(photos, tmp_path):
    "Without Ray installed, one line that says what to install"
    code = ("import sys; sys.modules['ray'] = None\n"
            "from recycle_classifier.batch.predict import predict_ray\n"
            "from recycle_classifier.base.core import UserError\n"
            f"try: predict_ray({str(photos['model'])!r}, [{str(photos['listing'])!r}], {str(tmp_path/'p.jsonl')!r})\n"
            "except UserError as e: print(e)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert "pip install 'recycle_classifier[ray]'" in r.stdout, r.stdout + r.stderr


def test_two_process_training_is_a_normal_export(tmp_path):
    "`accelerate launch` with two CPU processes (gloo) on the sample: an export load_learner loads and predicts with"
    from recycle_classifier.formats.learner import load_learner
    out = tmp_path/'dist.pkl'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([str(Path(sys.executable).parent/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2',
                        '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29617',
                        '-m', 'recycle_classifier.train.distributed', 'train-distributed', str(SAMPLE_DIR), '--out', str(out),
                        '--arch', 'mobilenet_v2', '--size', '64', '--epochs', '1', '--freeze-epochs', '0', '--device', 'cpu'],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'training on 2 process(es)' in r.stdout
    meta = json.loads(out.with_suffix('.json').read_text())
    assert meta['metrics']['processes'] == 2 and meta['metrics']['n_valid'] == len(image_files(SAMPLE_DIR/'valid'))
    learn = load_learner(out)
    assert 'SyncBatchNorm' not in repr(learn.model) and not hasattr(learn.model, 'module')
    recs = list(load_predictor(out).predict_paths(image_files(SAMPLE_DIR/'valid')[:4]))
    assert [r['label'] in learn.dls.vocab for r in recs] == [True] * 4
