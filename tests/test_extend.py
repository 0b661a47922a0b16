"`recycle-classifier extend`: a trained model learns a new class from a few photos; the .extended format; bins"
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from recycle_classifier.base.core import UserError, SAMPLE_DIR
from recycle_classifier.base.layout import image_files, walk_dataset
from recycle_classifier.base.images import open_image

ROOT = Path(__file__).resolve().parents[1]
BASE = ['cardboard', 'glass', 'metal', 'paper', 'plastic']

def cli(*args, cwd=ROOT):
    r = subprocess.run([sys.executable, '-m', 'recycle_classifier.cli', *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=600)
    return r.returncode, r.stdout, r.stderr

def cli_here(*args):
    "The command line in this process, for error paths (a fresh process each would only add start-up time)"
    from conftest import run_cli
    r = run_cli(*args)
    return r.returncode, r.stdout, r.stderr

@pytest.fixture(scope='module')
def base_pkl(tmp_path_factory):
    "A model of the default kind (frozen features, standardisation, MLP head) trained on 5 sample classes, exported"
    from fastai.vision.all import ImageDataLoaders, Resize, Learner, CrossEntropyLossFlat
    from recycle_classifier.features.cache import FeatureCache
    from recycle_classifier.features.classifier import feature_model, standardise
    from recycle_classifier.features.embedder import get_embedder
    from recycle_classifier.formats.learner import export_learner
    tmp = tmp_path_factory.mktemp('base')
    for split in ('train', 'valid'):
        for c in BASE: shutil.copytree(SAMPLE_DIR/split/c, tmp/'data'/split/c)
    emb = get_embedder('efficientnet_lite0', 96)
    tr = walk_dataset(tmp/'data').in_split('train')
    feats, _, _ = FeatureCache(tmp/'cache').features(emb, [p.path for p in tr], ('orig', 'flip'))
    y = torch.tensor([BASE.index(p.label) for p in tr]).repeat_interleave(2)
    mean, std = standardise(feats)
    x = torch.from_numpy((feats - mean) / std).reshape(-1, emb.dim)
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(emb.dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
    opt = torch.optim.AdamW(head.parameters(), 3e-3, weight_decay=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(head(x), y); opt.zero_grad(); loss.backward(); opt.step()
    dls = ImageDataLoaders.from_folder(tmp/'data', train='train', valid='valid', item_tfms=Resize(96, method='squish'),
                                       bs=16, num_workers=0)
    learn = Learner(dls, feature_model(emb, head.eval(), mean, std), loss_func=CrossEntropyLossFlat())
    from recycle_classifier.formats.protomodel import feature_stats  # what training records about its features
    learn.recycle_meta = dict(embedder=emb.meta, views=['orig', 'flip'],
                              feature_stats=feature_stats(x.reshape(-1, 2, emb.dim), y[::2], BASE))
    return export_learner(learn, tmp/'models'/'base.pkl')

def trash(split='train', n=5): return image_files(SAMPLE_DIR/split/'trash')[:n]

@pytest.fixture(scope='module')
def extended(base_pkl, tmp_path_factory):
    "`extend` run from the command line: trash from 5 photos and one broken file, into the landfill bin"
    broken = tmp_path_factory.mktemp('photos')/'broken.jpg'
    broken.write_bytes(b'\xff\xd8\xff truncated')
    out = base_pkl.parent/'campus.extended'
    rc, stdout, stderr = cli('extend', base_pkl, 'trash', *trash(), broken, '--bin', 'landfill', '--tip', 'Bag it.', '--out', out)
    assert rc == 0, stderr
    return out, stdout, stderr

def test_cli_extend_names_skipped_photos_and_reports_the_model(extended):
    out, stdout, stderr = extended
    assert 'broken.jpg' in stderr and 'skipping' in stderr
    assert "added 'trash'" in stdout and '6 classes' in stdout and 'trash: 5 photo(s)' in stdout and 'bin landfill' in stdout

def test_extended_file_is_safetensors_with_metadata_and_a_base_reference(extended, base_pkl):
    out = extended[0]
    with safe_open(str(out), framework='pt') as f:
        meta = json.loads(f.metadata()['extended'])
        assert set(f.keys()) == {'weight', 'bias', 'support.0'}
        assert f.get_tensor('weight').shape == (1, 1280) and f.get_tensor('support.0').shape == (5, 2, 1280)
    assert meta['classes'] == BASE + ['trash'] and meta['base']['classes'] == BASE
    assert meta['base']['path'] == 'base.pkl' and len(meta['base']['sha256']) == 64
    a = meta['added'][0]
    assert (a['class'], a['photos'], len(a['skipped']), a['method']) == ('trash', 5, 1, 'logistic') and a['created'][:2] == '20'
    assert meta['method']['name'] == 'logistic' and meta['method']['stats'] == 'model'
    assert meta['bins'] == {'trash': 'landfill'} and meta['tips'] == {'trash': 'Bag it.'}
    assert oct(out.stat().st_mode & 0o777) == '0o644'

def test_predict_and_load_predictor_accept_the_extended_model(extended, base_pkl):
    from recycle_classifier.formats.predictor import load_predictor
    out = extended[0]
    rc, stdout, stderr = cli('predict', out, SAMPLE_DIR/'valid'/'trash', SAMPLE_DIR/'valid'/'glass', '--json')
    assert rc == 0, stderr
    recs = [json.loads(l) for l in stdout.splitlines()]
    assert len(recs) == 20 and all(set(r['probs']) == set(BASE + ['trash']) for r in recs)
    trash_recall = np.mean([r['label'] == 'trash' for r in recs if '/trash/' in r['path']])
    glass_ok = np.mean([r['label'] == 'glass' for r in recs if '/glass/' in r['path']])
    assert trash_recall >= .5 and glass_ok >= .5, (trash_recall, glass_ok)
    pred, base = load_predictor(out), load_predictor(base_pkl)
    assert pred.kind == 'extended' and pred.classes == BASE + ['trash'] and pred.meta['bins'] == {'trash': 'landfill'}
    # the trained classes keep their logits exactly; only the softmax gains a term
    x = pred.learn.dls.test_dl([open_image(p) for p in trash('valid', 3)]).one_batch()[0]
    with torch.no_grad(): assert torch.allclose(pred.learn.model(x)[:, :5], base.learn.model(x), atol=1e-5)

def test_bad_input_writes_nothing(extended, base_pkl, tmp_path):
    out = tmp_path/'x.extended'
    rc, _, err = cli_here('extend', base_pkl, 'pods', *trash(), '--bin', 'compost', '--out', out)
    assert rc == 2 and "unknown bin 'compost'; the bins of default.yaml are: recycling, landfill" in err
    rc, _, err = cli_here('extend', extended[0], 'trash', *trash(n=2), '--out', out)
    assert rc == 2 and 'use --replace' in err
    rc, _, err = cli_here('extend', base_pkl, 'glass', *trash(n=2), '--out', out)
    assert rc == 2 and 'trained on' in err
    bad = tmp_path/'notes.jpg'; bad.write_text('not a photo')
    rc, _, err = cli_here('extend', base_pkl, 'pods', bad, '--out', out)
    assert rc == 2 and "0 readable photo(s), fewer than the 1 needed (1 unreadable)" in err
    rc, _, err = cli_here('extend', base_pkl, 'pods', *trash(n=2), '--min-photos', '3', '--out', out)
    assert rc == 2 and 'fewer than the 3 needed' in err
    rc, _, err = cli_here('extend', SAMPLE_DIR/'train'/'glass', 'pods', *trash(n=2), '--out', out)
    assert rc == 2 and 'extend an exported learner (.pkl) or an extended model (.extended)' in err
    assert not out.exists() and not list(tmp_path.glob('.x.extended*'))

def test_replace_remove_and_extend_again(extended, base_pkl, tmp_path):
    from recycle_classifier.extend import extend
    from recycle_classifier.formats.predictor import load_predictor
    two = extend(extended[0], 'pods', image_files(SAMPLE_DIR/'train'/'metal')[:4], tmp_path/'two.extended')
    p = load_predictor(two)
    assert p.classes == BASE + ['trash', 'pods'] and [a['photos'] for a in p.meta['added']] == [5, 4]
    assert p.meta['bins'] == {'trash': 'landfill'}   # kept from the model it extended
    with safe_open(str(two), framework='pt') as f: base = json.loads(f.metadata()['extended'])['base']
    assert Path(base['abs_path']) == base_pkl.resolve() and base['path'] == os.path.relpath(base_pkl.resolve(), tmp_path)
    again = extend(two, 'trash', trash(n=3), tmp_path/'three.extended', replace=True)
    assert [a['photos'] for a in load_predictor(again).meta['added']] == [4, 3]
    one = extend(again, remove='pods', out=tmp_path/'one.extended')
    assert load_predictor(one).classes == BASE + ['trash']
    with pytest.raises(UserError, match="no added class 'bottle'"): extend(one, remove='bottle', out=tmp_path/'n.extended')
    with pytest.raises(UserError, match='no added classes left'): extend(one, remove='trash', out=tmp_path/'n.extended')

def test_missing_or_changed_base_is_refused(extended, base_pkl, tmp_path):
    from recycle_classifier.formats.protomodel import ExtendedPredictor
    shutil.copy(extended[0], tmp_path/'alone.extended')
    moved = base_pkl.with_name('moved.pkl'); base_pkl.rename(moved)
    try:
        with pytest.raises(UserError, match='its base model is missing'): ExtendedPredictor(tmp_path/'alone.extended')
    finally: moved.rename(base_pkl)
    shutil.copy(base_pkl, tmp_path/'base.pkl')
    assert ExtendedPredictor(tmp_path/'alone.extended').classes[-1] == 'trash'   # found beside it
    with open(tmp_path/'base.pkl', 'ab') as f: f.write(b'\0')
    with pytest.raises(UserError, match='has changed'): ExtendedPredictor(tmp_path/'alone.extended')

def test_any_fastai_learner_can_be_extended(tmp_path):
    "A plain fastai vision_learner (body + fastai's head) extended through its own final layer"
    from fastai.vision.all import ImageDataLoaders, Resize, vision_learner
    from recycle_classifier.features.backbones import efficientnet_lite0
    from recycle_classifier.formats.learner import export_learner
    from recycle_classifier.extend import extend
    from recycle_classifier.formats.predictor import load_predictor
    d = tmp_path/'data'
    for c in ('glass', 'paper'): shutil.copytree(SAMPLE_DIR/'train'/c, d/c)
    dls = ImageDataLoaders.from_folder(d, valid_pct=.25, item_tfms=Resize(64), bs=8, num_workers=0)
    learn = vision_learner(dls, efficientnet_lite0, pretrained=True)
    pkl = export_learner(learn, tmp_path/'fastai.pkl')
    said = []
    out = extend(pkl, 'trash', trash(), tmp_path/'fastai.extended', warn=said.append)
    p = load_predictor(out)
    assert p.classes == ['glass', 'paper', 'trash']
    assert any('new classes are imprinted' in s for s in said) and p.meta['method']['name'] == 'imprint'  # no statistics: the fallback
    ims = [open_image(f) for f in trash('valid', 4)]
    recs = p.predict(ims)
    assert all(set(r['probs']) == {'glass', 'paper', 'trash'} for r in recs)
    # an extended model is one nn.Module in a fastai Learner: the ONNX export takes it as it is
    from recycle_classifier.formats.onnx_export import export_onnx
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    o = OnnxPredictor(export_onnx(p.learn, tmp_path/'fastai.onnx'))
    assert o.classes == ['glass', 'paper', 'trash']
    assert np.abs(o.predict_probs(ims) - p.predict_probs(ims)).max() < 1e-3

def test_statistics_come_from_the_feature_cache_for_models_without_them(base_pkl, tmp_path):
    "A model exported without feature statistics: its training photos' cached features (found by hash) give them"
    from recycle_classifier.features.cache import FeatureCache
    from recycle_classifier.base.fileio import file_sha256
    from recycle_classifier.formats.learner import load_learner
    from recycle_classifier.extend import stats_from_cache
    from recycle_classifier.formats.protomodel import head_site, read_feature_stats
    learn = load_learner(base_pkl)
    cache = FeatureCache(base_pkl.parents[1]/'cache')
    _, head, _ = head_site(learn.model, 5)
    assert stats_from_cache(learn, head, cache) is None                      # no training hashes recorded
    files = [p.path for p in walk_dataset(base_pkl.parents[1]/'data').in_split('train')]
    learn.recycle_meta = dict(learn.recycle_meta, train_sha256=sorted(file_sha256(f) for f in files))
    del learn.recycle_meta['feature_stats']
    got = stats_from_cache(learn, head, cache)
    assert got['classes'] == BASE and sum(got['count']) == len(files)
    m, s = read_feature_stats(got)
    m0, _ = read_feature_stats(load_learner(base_pkl).recycle_meta['feature_stats'])
    assert torch.allclose(m, m0, atol=0.35)      # labelled by the head, not by folder: nearly the same means

def test_extended_runs_from_its_file_and_the_base_onnx_without_the_pickle(extended, base_pkl, tmp_path):
    "Copy only the .extended file and the base's .onnx to a new folder: predict gives the labels the learner gives, without fastai"
    from recycle_classifier.formats.onnx_export import export_onnx
    from recycle_classifier.formats.protomodel import ExtendedPredictor
    (tmp_path/'export').mkdir()
    onnx = export_onnx(shutil.copy(base_pkl, tmp_path/'export'/'base.pkl'))   # the same bytes: the .onnx records the base's hash
    away = tmp_path/'elsewhere'
    away.mkdir()
    shutil.copy(extended[0], away/'campus.extended'); shutil.copy(onnx, away/'base.onnx')
    photos = [SAMPLE_DIR/'valid'/'trash', SAMPLE_DIR/'valid'/'glass']
    code = ("import sys; sys.modules['fastai'] = None\n"      # no learner, so nothing is unpickled
            "from recycle_classifier.cli import main\n"
            f"sys.exit(main(['predict', {str(away/'campus.extended')!r}, *{list(map(str, photos))!r}, '--json', '--info']))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=away, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    info, *recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert info['info']['base_model'] == str(away/'base.onnx') and info['info']['classes'] == BASE + ['trash']
    ref = list(ExtendedPredictor(extended[0], need_learner=True).predict_paths(photos))
    assert len(recs) == len(ref) == 20
    assert [x['label'] for x in recs] == [y['label'] for y in ref]
    assert max(abs(x['probs'][c] - y['probs'][c]) for x, y in zip(recs, ref) for c in x['probs']) < 1e-4
    # without the .onnx (and with the .pkl gone from its recorded place) it says what it looked for
    (away/'base.onnx').unlink()
    moved = base_pkl.with_name('moved.pkl'); base_pkl.rename(moved)
    try:
        with pytest.raises(UserError, match=r'its base model is missing .*keep the .extended file next to base.onnx or base.pkl'):
            ExtendedPredictor(away/'campus.extended')
    finally: moved.rename(base_pkl)
