"Few-shot prototype models: support folders, calibration, the .fewshot format (old files too), episodes, the CLI; research code in bench/"
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from recycle_classifier import fewshot as fsl
from recycle_classifier.base.core import UserError, SAMPLE_DIR
from recycle_classifier.features.embedder import get_embedder, Embedder
from recycle_classifier.formats.protomodel import FewShotPredictor, unit_features, prototypes

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']

@pytest.fixture(scope='module')
def emb(): return get_embedder('efficientnet_lite0', 96)

@pytest.fixture(scope='module')
def sample(emb):
    "12 train photos per class of the sample, their labels and unit features"
    files = fsl.support_files(SAMPLE_DIR/'train')
    ims, y = [], []
    for i, c in enumerate(CLASSES): ims += fsl.read_photos(files[c][:12], c); y += [i] * 12
    return ims, np.array(y), unit_features(emb, ims)

@pytest.fixture(scope='module')
def model(emb, sample):
    _, y, z = sample
    return fsl.fewshot_model({c: z[y == i][:5] for i, c in enumerate(CLASSES)}, emb)

def support_dir(tmp_path, classes=('glass', 'metal'), n=4):
    "A support folder with `n` sample photos for each class"
    for c in classes:
        (tmp_path/'support'/c).mkdir(parents=True)
        for f in fsl.support_files(SAMPLE_DIR/'train')[c][:n]: shutil.copy(f, tmp_path/'support'/c)
    return tmp_path/'support'

# ------------------------------------------------------------------ reading support folders
def test_support_files_merge_splits_and_refuse_non_folders(tmp_path):
    folders = fsl.support_files(SAMPLE_DIR)
    assert list(folders) == CLASSES and all(len(v) == 40 for v in folders.values())
    with pytest.raises(UserError, match='no such folder'): fsl.support_files(tmp_path/'missing')
    with pytest.raises(UserError, match='no class subfolders'): fsl.support_files(tmp_path)

def test_build_skips_unreadable_and_refuses_empty_or_short_classes(tmp_path):
    d = support_dir(tmp_path)
    (d/'glass'/'notes.jpg').write_text('not a photo')
    warned = []
    m = fsl.build_fewshot(d, 'efficientnet_lite0', 64, warn=warned.append)
    assert [len(v) for v in m.support.values()] == [4, 4] and 'notes.jpg' in warned[0]
    with pytest.raises(UserError, match=r"class 'glass' has 4 readable photo\(s\), fewer than the 5 needed \(1 unreadable\)"):
        fsl.build_fewshot(d, 'efficientnet_lite0', 64, min_shots=5, warn=warned.append)
    (d/'paper').mkdir()
    with pytest.raises(UserError, match="'paper' has no photos"): fsl.build_fewshot(d, 'efficientnet_lite0', 64, warn=warned.append)

# ------------------------------------------------------------------ prototypes
def test_prototypes_classify_held_out_photos_well_above_chance(model, sample):
    _, y, z = sample
    held = np.concatenate([np.flatnonzero(y == i)[5:] for i in range(6)])
    preds = model.predict_features(z[held])
    acc = np.mean([p['label'] == CLASSES[y[i]] for p, i in zip(preds, held)])
    assert acc > 0.45, acc  # chance is 1/6
    assert all(abs(sum(p['probs'].values()) - 1) < 1e-3 and p['probability'] == max(p['probs'].values()) for p in preds)

def test_add_and_remove_class_change_only_that_class(model, sample):
    ims, y, z = sample
    before = model.predict_features(z[:4])
    m = fsl.remove_fewshot_class(model, 'trash')
    assert m.classes == CLASSES[:5]
    m = fsl.add_fewshot_class(m, 'trash', [ims[i] for i in np.flatnonzero(y == 5)[:5]])
    assert m.classes[-1] == 'trash' and len(m.support['trash']) == 5
    assert [p['label'] for p in m.predict_features(z[:4])] == [p['label'] for p in before]
    with pytest.raises(UserError, match="no class 'bottle'"): fsl.remove_fewshot_class(m, 'bottle')
    with pytest.raises(UserError, match='cannot be a class name'): fsl.add_fewshot_class(m, fsl.NONE_LABEL, ims[:1])

def test_calibration_flags_what_matches_nothing():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(3, 64, generator=g), dim=1)
    support = F.normalize(centres.repeat_interleave(5, 0) + .15 * torch.randn(15, 64, generator=g), dim=1)
    labels = torch.arange(3).repeat_interleave(5)
    temp, thr = fsl.calibrate(support, labels, 3)
    genuine = (support @ prototypes(support, labels, 3).T).max(1).values
    assert 0 < thr < genuine.min() and temp > 1
    m = FewShotPredictor(support={f'c{i}': support[labels == i] for i in range(3)}, temperature=temp, threshold=thr)
    stranger = F.normalize(torch.randn(1, 64, generator=g), dim=1)
    assert m.predict_features(stranger)[0]['novel'] and not m.predict_features(centres[1:2])[0]['novel']
    assert m.predict_features(centres[1:2])[0]['label'] == 'c1'
    assert fsl.calibrate(support[::5], torch.arange(3), 3) == (fsl.DEFAULT_TEMPERATURE, None)  # 1 photo each

# ------------------------------------------------------------------ saving
def test_save_load_roundtrip_without_pickle_or_photos(model, sample, tmp_path):
    from recycle_classifier.formats.predictor import load_predictor
    p = model.save(tmp_path/'m.fewshot')
    with safe_open(str(p), framework='pt') as f:
        meta = json.loads(f.metadata()['fewshot'])
        assert set(f.keys()) == {'support', 'support_labels'}  # a stock ImageNet body is not copied
    assert meta['classes'] == CLASSES and meta['backbone']['arch'] == 'efficientnet_lite0' and meta['backbone']['size'] == 96
    assert meta['threshold'] == model.threshold and meta['version']
    m2 = load_predictor(p)
    assert m2.predict_features(sample[2][:10]) == model.predict_features(sample[2][:10])
    assert m2.predict(sample[0][:3]) == model.predict(sample[0][:3])
    (tmp_path/'bad.fewshot').write_bytes(b'\x80\x04not safetensors')
    with pytest.raises(UserError, match='not a few-shot model'): FewShotPredictor(tmp_path/'bad.fewshot')
    with pytest.raises(UserError, match='no such few-shot model'): FewShotPredictor(tmp_path/'none.fewshot')

def test_a_fine_tuned_body_saved_by_version_0_2_loads(sample, tmp_path):
    "Files with a learner's or fine-tuned body (`body.*` tensors) load it into the package's Embedder"
    from recycle_classifier.formats.protomodel import write_model, FEWSHOT_FORMAT
    e = Embedder('efficientnet_lite0', 96, engine='torch-fp32')
    with torch.no_grad(): e.net.body[-1][0].weight.mul_(1.5)   # a changed last block
    z = unit_features(e, sample[0][:6])
    meta = dict(format=FEWSHOT_FORMAT, classes=['a', 'b'], temperature=10., threshold=None, version='0.2.0',
                backbone=dict(arch='efficientnet_lite0', kind='finetuned', source='', size=96, mean=[.5] * 3, std=[.5] * 3, dim=1280))
    body = {f'body.{k}': v for k, v in e.net.body.state_dict().items()}
    write_model(tmp_path/'ft.fewshot', dict(support=z, support_labels=torch.tensor([0, 0, 0, 1, 1, 1]), **body), 'fewshot', meta)
    m = FewShotPredictor(tmp_path/'ft.fewshot')
    assert torch.allclose(unit_features(m.embedder, sample[0][:2]), z[:2], atol=1e-4)
    assert not torch.allclose(sample[2][:2], z[:2], atol=1e-3)   # not the stock body
    assert FewShotPredictor(m.save(tmp_path/'again.fewshot')).body_state.keys() == m.body_state.keys()

# ------------------------------------------------------------------ episodes
def test_episodes_never_share_photos_and_report_a_ci():
    labels = np.repeat(np.arange(4), 20)
    by_class = {c: np.flatnonzero(labels == c) for c in range(4)}
    s, q = fsl.sample_episode(by_class, 3, 5, 15, np.random.default_rng(0))
    assert s.shape == (3, 5) and q.shape == (3, 15) and len(set(s.ravel()) | set(q.ravel())) == 60
    assert all(len({labels[i] for i in row}) == 1 for row in np.concatenate([s, q], 1))
    truth = lambda s, q: np.repeat(np.arange(s.shape[0]), q.shape[1])
    assert fsl.run_episodes(labels, truth, 3, 5, episodes=50) == dict(ways=3, shots=5, queries=15, episodes=50, acc=100., ci95=0.)
    coin = fsl.run_episodes(labels, lambda s, q: np.random.randint(0, 3, q.size), 3, 1, episodes=600)
    assert 28 < coin['acc'] < 39 and 0 < coin['ci95'] < 2

def test_check_episodes_explains_what_is_missing():
    labels = np.repeat(np.arange(3), [30, 30, 8])
    fsl.check_episodes(labels, 2, 5, 15)
    with pytest.raises(UserError, match=r'need 20 photos per class; too few in: trash \(8\)'):
        fsl.check_episodes(labels, 3, 5, 15, ['glass', 'metal', 'trash'])
    with pytest.raises(UserError, match='4 classes'): fsl.check_episodes(labels, 4, 1, 1)

# ------------------------------------------------------------------ research code (bench/fewshot_research.py)
@pytest.fixture(scope='module')
def research():
    sys.path.insert(0, str(ROOT/'bench'))
    import fewshot_research
    return fewshot_research

def test_open_set_episodes_on_real_features(research, sample):
    _, y, z = sample
    r = research.open_set_episodes(z, y, ways=3, shots=5, queries=5, episodes=20)
    assert 30 < r['known_correct'] <= 100 and 0 <= r['unknown_rejected'] <= 100

def test_episodic_finetuning_lowers_the_protonet_loss_on_base_classes(research, sample):
    ims, y, _ = sample
    e = Embedder('efficientnet_lite0', 96, engine='torch-fp32')
    prefix = research.frozen_features(e, research.split_body(e, 1)[0], ims[:36])
    idx = torch.as_tensor(np.concatenate([np.flatnonzero(y[:36] == c) for c in range(3)]))
    loss = lambda: research.protonet_loss(research.tail_embed(e, prefix[idx], 1), 3, 5).item()
    before = loss()
    research.episodic_finetune(e, prefix, y[:36], n_train=1, ways=3, shots=5, queries=5, steps=20, lr=3e-4)
    assert loss() < before
    assert torch.allclose(research.tail_embed(e, prefix[:2], 1), research.tail_embed(e, prefix[:2], 1))

def test_siamese_learns_same_versus_different_on_base_classes(research, sample):
    ims, y, _ = sample
    e = Embedder('efficientnet_lite0', 96, engine='torch-fp32')
    prefix = research.frozen_features(e, research.split_body(e, 1)[0], ims[:36])
    yy = y[:36]
    same = torch.as_tensor(yy[:, None] == yy[None, :]) & ~torch.eye(36, dtype=torch.bool)
    diff = torch.as_tensor(yy[:, None] != yy[None, :])
    def auc(net):   # how often a same-class pair is ranked above a different-class one
        z = research.siamese_embed(net, prefix)
        p = torch.sigmoid(net.pair_logits(z, z))
        return (p[same][:, None] > p[diff][None]).float().mean().item()
    untrained = auc(research.train_siamese(e, prefix, yy, n_train=1, steps=0, pairs=16, lr=1e-3))
    net = research.train_siamese(e, prefix, yy, n_train=1, steps=30, pairs=16, lr=1e-3)
    assert auc(net) > untrained + .02, (auc(net), untrained)
    z = research.siamese_embed(net, prefix)
    assert (net.fc.weight <= 0).all()
    pred = research.siamese_classify(net, z, np.array([[0, 1], [12, 13], [24, 25]]), np.array([[2, 3], [14, 15], [26, 27]]))
    assert pred.shape == (6,) and set(pred.tolist()) <= {0, 1, 2}

# ------------------------------------------------------------------ command line
def cli(*args):
    r = subprocess.run([sys.executable, '-m', 'recycle_classifier.cli', 'fewshot', *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    return r.returncode, r.stdout, r.stderr

def test_cli_build_add_predict(tmp_path, capsys):
    d = support_dir(tmp_path, ('glass', 'metal'), n=5)
    (d/'glass'/'broken.jpg').write_bytes(b'\xff\xd8\xff truncated')
    model = tmp_path/'models'/'bins.fewshot'
    rc, out, err = cli('build', d, '--out', model)
    assert rc == 0 and 'broken.jpg' in err and '2 classes' in out and model.exists()
    assert '\r' not in out + err   # a clean log when redirected
    backbone = FewShotPredictor(model).backbone   # the default embedding
    assert (backbone['arch'], backbone['size'], backbone['mean']) == ('efficientnet_lite0', 320, [0.5, 0.5, 0.5])
    from recycle_classifier.cli import main
    paper = fsl.support_files(SAMPLE_DIR/'train')['paper'][:5]
    assert main(['fewshot', 'add', str(model), 'paper', *map(str, paper)]) == 0
    assert 'paper: 5 photo(s); model has 3 classes' in capsys.readouterr().out
    queries = [SAMPLE_DIR/'valid'/'glass', tmp_path/'missing.jpg', d/'glass'/'broken.jpg']
    rc, out, _ = cli('predict', model, *queries, '--json')
    rows = [json.loads(l) for l in out.splitlines()]   # stdout is JSON lines only
    assert rc == 1 and len(rows) == 12 and '\r' not in out
    good = [r for r in rows if 'error' not in r]
    assert len(good) == 10 and set(good[0]) >= {'path', 'label', 'probability', 'probs', 'novel'}
    assert set(good[0]['probs']) == {'glass', 'metal', 'paper'}
    assert sum(r['label'] == 'glass' for r in good) >= 6
    assert [r['error'] for r in rows if 'error' in r][0] == 'no such file'

def test_cli_errors_are_one_line(tmp_path, capsys):
    from recycle_classifier.cli import main
    d = support_dir(tmp_path, ('glass',), n=2)
    (d/'metal').mkdir()
    assert main(['fewshot', 'build', str(d), '--out', str(tmp_path/'m.fewshot')]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: class 'metal' has no photos (folder {d/'metal'} is empty)"
    assert main(['fewshot', 'eval', str(SAMPLE_DIR), '--ways', '3', '--shots', '30', '--episodes', '10', '--size', '64']) == 2
    assert 'need 45 photos per class' in capsys.readouterr().err
    assert main(['fewshot', 'predict', str(tmp_path/'nope.fewshot'), str(SAMPLE_DIR)]) == 2
    assert 'no such few-shot model' in capsys.readouterr().err
    assert not (tmp_path/'m.fewshot').exists()

def test_cli_eval_on_sample(capsys):
    from recycle_classifier.cli import main
    assert main(['fewshot', 'eval', str(SAMPLE_DIR), '--ways', '3', '--shots', '5', '--episodes', '100', '--queries', '5',
                 '--max-per-class', '12', '--size', '96', '--json']) == 0
    r = json.loads(capsys.readouterr().out)
    assert r['episodes'] == 100 and 45 < r['acc'] <= 100 and r['ci95'] > 0 and (r['backbone'], r['size']) == ('efficientnet_lite0', 96)
