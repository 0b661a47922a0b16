"Few-shot prototypes, calibration, saving, episodes, fine-tuning, Siamese and the `fewshot` CLI, on the TrashNet sample"
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from recycle_classifier import fewshot as fsl
from recycle_classifier.core import UserError, SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']

@pytest.fixture(scope='module')
def emb():
    return fsl.imagenet_embedder('mobilenet_v2')

@pytest.fixture(scope='module')
def sample(emb):
    "12 photos per class of the sample (train split), labels, embeddings, and the features before the last block"
    files = fsl.class_folders(SAMPLE_DIR/'train')
    ims, y = [], []
    for i, c in enumerate(CLASSES):
        ims += fsl.load_photos(files[c][:12])[0]; y += [i] * 12
    prefix = fsl.frozen_features(emb, fsl.split_body(emb, 1)[0], ims)
    return ims, np.array(y), fsl.tail_embed(emb, prefix, 1), prefix

@pytest.fixture(scope='module')
def model(emb, sample):
    ims, y, z, _ = sample
    m = fsl.FewShotModel(emb)
    for i, c in enumerate(CLASSES): m.add_embeddings(c, z[y == i][:5])
    return m

def support_dir(tmp_path, classes=('glass', 'metal'), n=4):
    "A support folder with `n` sample photos for each class"
    for c in classes:
        (tmp_path/'support'/c).mkdir(parents=True)
        for f in fsl.class_folders(SAMPLE_DIR/'train')[c][:n]: shutil.copy(f, tmp_path/'support'/c)
    return tmp_path/'support'

# ------------------------------------------------------------------ reading support folders
def test_class_folders_merges_splits_and_rejects_non_folders(tmp_path):
    folders = fsl.class_folders(SAMPLE_DIR)
    assert list(folders) == CLASSES and all(len(v) == 40 for v in folders.values())
    with pytest.raises(UserError, match='not a folder'): fsl.class_folders(tmp_path/'missing')
    with pytest.raises(UserError, match='no class subfolders'): fsl.class_folders(tmp_path)

def test_load_support_skips_unreadable_and_refuses_empty_or_short_classes(tmp_path):
    d = support_dir(tmp_path)
    (d/'glass'/'notes.jpg').write_text('not a photo')
    warned = []
    sup = fsl.load_support(d, warn=warned.append)
    assert [len(v) for v in sup.values()] == [4, 4] and 'notes.jpg' in warned[0]
    with pytest.raises(UserError, match="class 'glass' has 4 readable photo.*fewer than the 5.*1 unreadable"):
        fsl.load_support(d, min_shots=5, warn=warned.append)
    (d/'paper').mkdir()
    with pytest.raises(UserError, match="'paper' has no photos"): fsl.load_support(d, warn=warned.append)

# ------------------------------------------------------------------ embeddings and prototypes
def test_embeddings_are_unit_vectors_and_deterministic(emb, sample):
    ims, _, z, _ = sample
    assert z.shape == (72, 1280) and emb.dim == 1280
    assert torch.allclose(z.norm(dim=1), torch.ones(72), atol=1e-5)
    assert torch.allclose(emb.embed(ims[:3]), z[:3], atol=1e-4)  # cached prefix + last block = whole body

def test_prototypes_classify_held_out_photos_well_above_chance(model, sample):
    _, y, z, _ = sample
    held = torch.as_tensor(np.concatenate([np.flatnonzero(y == i)[5:] for i in range(6)]))
    preds = model.predict_embeddings(z[held])
    acc = np.mean([p['nearest'] == CLASSES[y[i]] for p, i in zip(preds, held.tolist())])
    assert acc > 0.45, acc  # chance is 1/6
    assert all(abs(sum(p['probs'].values()) - 1) < 1e-3 and p['probability'] == max(p['probs'].values()) for p in preds)

def test_add_and_remove_class_change_only_that_class(model, sample):
    ims, y, z, _ = sample
    before = model.predict_embeddings(z[:4])
    model.remove_class('trash')
    assert 'trash' not in model.classes and len(model.classes) == 5
    assert model.add_class('trash', [ims[i] for i in np.flatnonzero(y == 5)[:5]]) == 5
    assert model.classes[-1] == 'trash'
    assert [p['nearest'] for p in model.predict_embeddings(z[:4])] == [p['nearest'] for p in before]
    with pytest.raises(UserError, match="no class 'bottle'"): model.remove_class('bottle')
    with pytest.raises(UserError, match='cannot be a class name'): model.add_embeddings(fsl.NONE_LABEL, z[:1])

def test_calibration_rejects_what_matches_nothing():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(3, 64, generator=g), dim=1)
    support = F.normalize(centres.repeat_interleave(5, 0) + .15 * torch.randn(15, 64, generator=g), dim=1)
    labels = torch.arange(3).repeat_interleave(5)
    temp, thr = fsl.calibrate(support, labels, 3)
    genuine = (support @ fsl.prototypes(support, labels, 3).T).max(1).values
    assert 0 < thr < genuine.min() and temp > 1
    m = fsl.FewShotModel(None)
    for i in range(3): m.add_embeddings(f'c{i}', support[labels == i])
    stranger = F.normalize(torch.randn(1, 64, generator=g), dim=1)
    assert m.predict_embeddings(stranger)[0]['label'] == fsl.NONE_LABEL
    assert m.predict_embeddings(centres[1:2])[0]['label'] == 'c1'
    assert fsl.calibrate(support[::5], torch.arange(3), 3) == (fsl.DEFAULT_TEMPERATURE, None)  # 1 photo each

# ------------------------------------------------------------------ saving
def test_save_load_roundtrip_without_pickle_or_photos(model, sample, tmp_path):
    p = fsl.save_fewshot(model, tmp_path/'m.fewshot')
    with safe_open(str(p), framework='pt') as f:
        meta = json.loads(f.metadata()['fewshot'])
        assert set(f.keys()) == {'support', 'support_labels'}  # a stock ImageNet body is not copied
    assert meta['classes'] == model.classes and meta['backbone']['arch'] == 'mobilenet_v2'
    assert meta['backbone']['dim'] == 1280 and meta['backbone']['size'] == 224 and meta['threshold'] == model.threshold
    assert meta['version'] and meta['backbone']['mean'] == [0.485, 0.456, 0.406]
    m2 = fsl.load_fewshot(p)
    z = sample[2][:10]
    assert m2.predict_embeddings(z) == model.predict_embeddings(z)
    (tmp_path/'bad.fewshot').write_bytes(b'\x80\x04not safetensors')
    with pytest.raises(UserError, match='not a few-shot model'): fsl.load_fewshot(tmp_path/'bad.fewshot')
    with pytest.raises(UserError, match='no such few-shot model'): fsl.load_fewshot(tmp_path/'none.fewshot')

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

def test_open_set_episodes_on_real_embeddings(sample):
    _, y, z, _ = sample
    r = fsl.open_set_episodes(z, y, ways=3, shots=5, queries=5, episodes=20)
    assert 30 < r['known_correct'] <= 100 and 0 <= r['unknown_rejected'] <= 100

# ------------------------------------------------------------------ fine-tuning and Siamese
def test_episodic_finetuning_lowers_the_protonet_loss_on_base_classes(sample):
    y, prefix = sample[1], sample[3]
    base = y < 3
    e = fsl.imagenet_embedder('mobilenet_v2')
    feats = prefix[torch.as_tensor(base)]
    idx = torch.as_tensor(np.concatenate([np.flatnonzero(y[base] == c) for c in range(3)]))
    loss = lambda: fsl.protonet_loss(fsl.tail_embed(e, feats[idx], 1), 3, 5).item()
    before = loss()
    fsl.episodic_finetune(e, feats, y[base], n_train=1, ways=3, shots=5, queries=5, steps=20, lr=3e-4)
    assert e.kind == 'finetuned' and loss() < before

def test_finetuned_body_is_saved_and_restored(sample, tmp_path):
    ims, y, _, prefix = sample
    e = fsl.imagenet_embedder('mobilenet_v2')
    fsl.episodic_finetune(e, prefix[:36], y[:36], ways=3, shots=5, queries=5, steps=3, lr=1e-3)
    m = fsl.FewShotModel(e)
    m.add_class('glass', ims[12:15]); m.add_class('metal', ims[24:27])
    m2 = fsl.load_fewshot(fsl.save_fewshot(m, tmp_path/'ft.fewshot'))
    assert m2.embedder.kind == 'finetuned'
    assert torch.allclose(m2.embedder.embed(ims[:2]), e.embed(ims[:2]), atol=1e-5)
    assert not torch.allclose(sample[2][:2], e.embed(ims[:2]), atol=1e-3)

def test_siamese_learns_same_versus_different_on_base_classes(sample):
    y, prefix = sample[1][:36], sample[3][:36]
    net = fsl.train_siamese(fsl.imagenet_embedder('mobilenet_v2'), prefix, y, n_train=1, steps=20, pairs=16, lr=1e-3)
    z = fsl.siamese_embed(net, prefix)
    p = torch.sigmoid(net.pair_logits(z, z))
    same = torch.as_tensor(y[:, None] == y[None, :]) & ~torch.eye(36, dtype=torch.bool)
    diff = torch.as_tensor(y[:, None] != y[None, :])
    auc = (p[same][:, None] > p[diff][None]).float().mean()  # same-class pairs ranked above different ones
    assert auc > .75, auc  # 0.65 before training
    assert (net.fc.weight <= 0).all()
    pred = fsl.siamese_classify(net, z, np.array([[0, 1], [12, 13], [24, 25]]), np.array([[2, 3], [14, 15], [26, 27]]))
    assert pred.shape == (6,) and set(pred.tolist()) <= {0, 1, 2}

# ------------------------------------------------------------------ a learner from the training stage
def test_learner_body_as_embedding(emb, sample, tmp_path):
    from fastai.vision.all import ImageDataLoaders, Resize, vision_learner
    from torchvision import models
    from recycle_classifier.export import export_learner
    d = support_dir(tmp_path, CLASSES[:2], n=4)
    dls = ImageDataLoaders.from_folder(d, valid_pct=.25, item_tfms=Resize(224), bs=2, num_workers=0)
    learn = vision_learner(dls, models.mobilenet_v2, weights='IMAGENET1K_V1')
    export_learner(learn, tmp_path/'learner.pkl')
    le = fsl.get_embedder(str(tmp_path/'learner.pkl'))
    assert le.kind == 'learner' and le.arch == 'mobilenet_v2'
    assert torch.allclose(le.embed(sample[0][:2]), sample[2][:2], atol=1e-4)  # untrained body = ImageNet body
    m = fsl.FewShotModel(le); m.add_class('a', sample[0][:3]); m.add_class('b', sample[0][12:15])
    p = fsl.save_fewshot(m, tmp_path/'l.fewshot')
    with safe_open(str(p), framework='pt') as f: assert any(k.startswith('body.') for k in f.keys())
    assert fsl.load_fewshot(p).predict_images(sample[0][:2]) == m.predict_images(sample[0][:2])
    with pytest.raises(UserError, match='neither a model file nor one of'): fsl.get_embedder('resnet9000')

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
    backbone = fsl.read_meta(model)[0]['backbone']   # the default embedding
    assert (backbone['arch'], backbone['size'], backbone['mean']) == ('efficientnet_lite0', 320, [0.5, 0.5, 0.5])
    from recycle_classifier.cli import main
    paper = fsl.class_folders(SAMPLE_DIR/'train')['paper'][:5]
    assert main(['fewshot', 'add', str(model), 'paper', *map(str, paper)]) == 0
    assert 'paper: 5 photo(s); model has 3 classes' in capsys.readouterr().out
    queries = [SAMPLE_DIR/'valid'/'glass', tmp_path/'missing.jpg', d/'glass'/'broken.jpg']
    rc, out, _ = cli('predict', model, *queries, '--json')
    rows = [json.loads(l) for l in out.splitlines()]
    assert rc == 1 and len(rows) == 12
    good = [r for r in rows if 'error' not in r]
    assert len(good) == 10 and set(good[0]) >= {'path', 'label', 'probability', 'probs'}
    assert set(good[0]['probs']) == {'glass', 'metal', 'paper'}
    assert sum(r['label'] == 'glass' for r in good) >= 6
    assert [r['error'] for r in rows if 'error' in r][0] == 'no such file'

def test_cli_errors_are_one_line(tmp_path, capsys):
    from recycle_classifier.cli import main
    d = support_dir(tmp_path, ('glass',), n=2)
    (d/'metal').mkdir()
    assert main(['fewshot', 'build', str(d), '--out', str(tmp_path/'m.fewshot')]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: class 'metal' has no photos (folder {d/'metal'} is empty)"
    assert main(['fewshot', 'eval', str(SAMPLE_DIR), '--ways', '3', '--shots', '30', '--episodes', '10']) == 2
    assert 'need 45 photos per class' in capsys.readouterr().err
    assert main(['fewshot', 'predict', str(tmp_path/'nope.fewshot'), str(SAMPLE_DIR)]) == 2
    assert 'no such few-shot model' in capsys.readouterr().err
    assert not (tmp_path/'m.fewshot').exists()

def test_cli_eval_on_sample(capsys):
    from recycle_classifier.cli import main
    assert main(['fewshot', 'eval', str(SAMPLE_DIR), '--ways', '3', '--shots', '5', '--episodes', '100', '--queries', '5',
                 '--max-per-class', '12', '--json']) == 0
    r = json.loads(capsys.readouterr().out)
    assert r['episodes'] == 100 and 45 < r['acc'] <= 100 and r['ci95'] > 0 and r['backbone'] == 'efficientnet_lite0'
    assert r['size'] == 320
    assert main(['fewshot', 'eval', str(SAMPLE_DIR), '--ways', '3', '--shots', '1', '--episodes', '20', '--queries', '2',
                 '--max-per-class', '3', '--backbone', 'mobilenet_v2', '--size', '64', '--json']) == 0
    small = json.loads(capsys.readouterr().out)
    assert (small['backbone'], small['size'], small['episodes']) == ('mobilenet_v2', 64, 20)

def test_cli_size_is_saved_and_used_after_reload(tmp_path, capsys):
    from recycle_classifier.cli import main
    d = support_dir(tmp_path, ('glass', 'metal'), n=3)
    model = tmp_path/'small.fewshot'
    assert main(['fewshot', 'build', str(d), '--out', str(model), '--backbone', 'mobilenet_v2', '--size', '160']) == 0
    m = fsl.load_fewshot(model)
    assert m.embedder.size == 160 and fsl.read_meta(model)[0]['backbone']['size'] == 160
    photo = fsl.load_photos(fsl.class_folders(SAMPLE_DIR/'valid')['glass'][:1])[0]
    at160 = fsl.imagenet_embedder('mobilenet_v2', 160).embed(photo)
    assert torch.allclose(m.embedder.embed(photo), at160, atol=1e-5)
    assert not torch.allclose(fsl.imagenet_embedder('mobilenet_v2').embed(photo), at160, atol=1e-3)
    capsys.readouterr()
    assert main(['fewshot', 'build', str(d), '--out', str(tmp_path/'x.fewshot'), '--size', '8']) == 2
    assert 'choose an image size from 32 to 1024' in capsys.readouterr().err
