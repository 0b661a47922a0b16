"""Evaluation and Grad-CAM: checked against pytorch-grad-cam, a hand computation from the head's weights,
scikit-learn's metrics and fastai's own transforms; never scoring training photos; the `evaluate` and `explain`
commands end to end."""
import json, shutil
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import CLASSES, cli, run_cli
from recycle_classifier.base.core import UserError, SAMPLE_DIR as SAMPLE
from recycle_classifier.base.images import open_image
from recycle_classifier.formats.learner import load_learner
from recycle_classifier.formats.predictor import load_predictor
from recycle_classifier.formats.cam import (cam_layer, model_input, gradcam_maps, cam_at_input, grad_cam, cam_overlay, explain_image, transform_box, input_box)
from recycle_classifier.metrics import confusion_matrix, classification_metrics, most_confused
from recycle_classifier.evaluate.scoring import evaluate, find_eval_set, LEGACY_WARNING
from recycle_classifier.evaluate.report import html_report, write_report

PHOTOS = [sorted((SAMPLE/'valid'/c).glob('*.jpg'))[0] for c in ('glass', 'metal', 'trash')]


@pytest.fixture(scope='module')
def learn():
    "A fastai `vision_learner` as Grad-CAM meets it: the package's small model (ImageNet MobileNetV2, a seeded new head), untrained"
    from recycle_classifier.testing import small_learner
    return small_learner(epochs=0, bs=8)


@pytest.fixture(scope='module')
def pred(model_path):
    return load_predictor(model_path)


@pytest.fixture(scope='module')
def sample_eval(model_path):
    "The sample's 60 validation photos scored through the ONNX file beside the export (the .pkl scores alike: test_train_predict)"
    return evaluate(load_predictor(model_path.with_suffix('.onnx')), SAMPLE, progress=False)


# ---- Grad-CAM ----------------------------------------------------------------------------------------------

def test_gradcam_matches_pytorch_grad_cam(learn):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    for photo in PHOTOS[:2]:
        x = model_input(learn, photo)
        _, idxs, _ = gradcam_maps(learn, x, top=2)
        for c in idxs:  # predicted and runner-up
            with GradCAM(model=learn.model, target_layers=[cam_layer(learn)]) as gc:
                ref = gc(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0]
            mine = cam_at_input(learn, photo, c)
            assert mine.shape == ref.shape == tuple(x.shape[-2:])
            assert np.abs(mine - ref).max() < 1e-4, (photo.name, c, np.abs(mine - ref).max())
    assert ref.max() > 0.99  # a real map was compared, not two blanks


def _bn_affine(m):
    "Scale and shift of a BatchNorm1d in eval mode"
    s = (m.weight / torch.sqrt(m.running_var + m.eps)).detach().numpy()
    return s, m.bias.detach().numpy() - m.running_mean.numpy() * s


def test_gradcam_equals_hand_computation_from_head_weights(learn):
    "Grad-CAM's channel weights worked out by hand through fastai's head: concat-pool, BN, linear, ReLU, BN, linear"
    from fastai.layers import AdaptiveConcatPool2d
    head = learn.model[1]
    assert isinstance(head[0], AdaptiveConcatPool2d) and isinstance(head[8], torch.nn.Linear)
    x = model_input(learn, PHOTOS[0])
    with torch.no_grad(): A = learn.model[0](x)[0].numpy()
    C, H, W = A.shape
    (s1, b1), (s2, b2) = _bn_affine(head[2]), _bn_affine(head[6])
    W1, W2 = head[4].weight.detach().numpy(), head[8].weight.detach().numpy()
    z = W1 @ (np.concatenate([A.max((1, 2)), A.mean((1, 2))]) * s1 + b1)  # fastai concatenates max, then avg
    relu = (z > 0).astype(np.float32)
    logits = W2 @ (z * relu * s2 + b2)
    with torch.no_grad(): assert np.allclose(logits, learn.model(x)[0].numpy(), atol=1e-4)
    probs, idxs, raw = gradcam_maps(learn, x, top=2)
    assert idxs == list(np.argsort(-logits)[:2])
    for c, cam in zip(idxs, raw):
        g = s1 * (W1.T @ (relu * s2 * W2[c]))  # d logit_c / d pooled features
        alpha = (g[:C] + g[C:]) / (H * W)      # mean over positions of d logit_c / d A: max-pool sends g to one cell
        hand = np.maximum((alpha[:, None, None] * A).sum(0), 0)
        assert np.abs(hand - cam).max() <= 1e-4 * max(hand.max(), 1e-3), (c, np.abs(hand - cam).max())


def test_transform_box_matches_fastai_transforms():
    "The box `transform_box` reports is the part of the photo fastai's validation transform really shows"
    from fastai.vision.augment import Resize, RandomResizedCrop, ResizeMethod, PadMode
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)).resize((300, 200), Image.BILINEAR)
    for t in [RandomResizedCrop(64), Resize(64), Resize(64, ResizeMethod.Squish),
              Resize(64, ResizeMethod.Pad, pad_mode=PadMode.Zeros), Resize((48, 64))]:
        seen = np.asarray(t(small, split_idx=1), dtype=float)
        l, tp, w, h = transform_box([t], small.size)
        if l >= 0 and tp >= 0: ours = small.resize(seen.shape[1::-1], Image.BILINEAR, box=(l, tp, l + w, tp + h))
        else: ours = small.crop((int(l), int(tp), int(l + w), int(tp + h))).resize(seen.shape[1::-1], Image.BILINEAR)
        assert np.abs(seen - np.asarray(ours, dtype=float)).mean() < 4, (t, np.abs(seen - np.asarray(ours, float)).mean())


def test_grad_cam_contract(learn):
    photo = open_image(PHOTOS[1])
    cam = grad_cam(learn, photo)
    assert cam.shape == (photo.height, photo.width) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1 and cam.max() > 0.99
    left, top, w, h = map(int, input_box(learn, photo.size))
    outside = np.ones(cam.shape, bool); outside[top:top + h, left:left + w] = False
    assert outside.any() and cam[outside].max() == 0  # the border the model never saw is cold
    explained = explain_image(learn, photo, top=2)
    probs = learn.predict(photo)[2].numpy()
    assert [e['label'] for e in explained] == [learn.dls.vocab[i] for i in np.argsort(-probs)[:2]]
    assert abs(explained[0]['probability'] - float(probs.max())) < 1e-5
    assert np.allclose(explained[0]['cam'], cam)
    runner_up = grad_cam(learn, PHOTOS[1], class_idx=explained[1]['class_idx'])  # a path works too
    assert np.allclose(explained[1]['cam'], runner_up)
    assert all(e['overlay'].size == photo.size and e['overlay'].mode == 'RGB' for e in explained)


def test_cam_overlay():
    photo = Image.new('RGB', (40, 30), (10, 200, 30))
    cam = np.zeros((3, 4), np.float32); cam[0, 0] = 1  # smaller than the photo: stretched
    assert np.array_equal(np.asarray(cam_overlay(photo, cam, alpha=0)), np.asarray(photo))
    heat = np.asarray(cam_overlay(photo, cam, alpha=1))
    assert heat.shape == (30, 40, 3)
    assert heat[0, 0, 0] > 100 and heat[0, 0, 2] < 100    # hot corner: red in jet
    assert heat[-1, -1, 2] > 100 and heat[-1, -1, 0] < 50  # cold corner: blue
    with pytest.raises(ValueError): cam_overlay(photo, cam, alpha=2)
    with pytest.raises(ValueError): cam_overlay(photo, np.zeros(5))


# ---- metrics -----------------------------------------------------------------------------------------------

def _check_against_sklearn(y_true, y_pred, classes):
    from sklearn import metrics as skm
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    assert np.array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=list(range(n))))
    m = classification_metrics(cm, classes)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=list(range(n)), zero_division=0)
    for i, c in enumerate(classes):
        got = m['per_class'][c]
        assert np.allclose([got['precision'], got['recall'], got['f1']], [p[i], r[i], f[i]]) and got['support'] == s[i]
    present = sorted(set(y_true))
    assert np.isclose(m['accuracy'], skm.accuracy_score(y_true, y_pred))
    assert np.isclose(m['balanced_accuracy'], skm.balanced_accuracy_score(y_true, y_pred))
    assert np.isclose(m['balanced_accuracy'], skm.recall_score(y_true, y_pred, labels=present, average='macro', zero_division=0))
    assert np.isclose(m['macro_f1'], skm.f1_score(y_true, y_pred, labels=present, average='macro', zero_division=0))
    return m


def test_metrics_match_sklearn_on_real_predictions(sample_eval):
    ev = sample_eval
    assert ev.classes == CLASSES and len(ev.paths) == 60 and not ev.skipped_files
    m = _check_against_sklearn(ev.y_true, ev.y_pred, ev.classes)
    from sklearn.metrics import log_loss
    assert np.isclose(ev.losses.mean(), log_loss(ev.y_true, ev.probs, labels=list(range(6))), atol=1e-5)
    assert m['n'] == 60 and all(v['support'] == 10 for v in m['per_class'].values())
    top = ev.top_losses(5)
    assert [t['loss'] for t in top] == sorted([t['loss'] for t in top], reverse=True)
    assert top[0]['loss'] == round(float(ev.losses.max()), 4)


def test_metrics_match_sklearn_with_missing_and_unpredicted_classes():
    rng = np.random.default_rng(1)
    classes = ['a', 'b', 'c', 'd', 'e']
    y_true = rng.choice([0, 1, 2, 4], 200, p=[.5, .3, .15, .05])  # no 'd' photos
    y_pred = np.where(rng.random(200) < .6, y_true, rng.choice([0, 1, 3], 200))  # 'e' never predicted unless right
    m = _check_against_sklearn(y_true, y_pred, classes)
    assert m['per_class']['d']['support'] == 0 and m['per_class']['d']['recall'] == 0


def test_most_confused_and_worst_class():
    cm = np.array([[8, 2, 0], [5, 5, 0], [0, 1, 9]])
    m = classification_metrics(cm, ['x', 'y', 'z'])
    assert most_confused(cm, ['x', 'y', 'z']) == m['most_confused'] == [
        dict(actual='y', predicted='x', count=5, share_of_actual=0.5),
        dict(actual='x', predicted='y', count=2, share_of_actual=0.2),
        dict(actual='z', predicted='y', count=1, share_of_actual=0.1)]
    assert m['worst_class']['label'] == 'y' and m['worst_class']['recall'] == 0.5
    # a class without photos cannot be the worst, however badly it is predicted
    assert classification_metrics(np.array([[3, 1], [0, 0]]), ['p', 'q'])['worst_class']['label'] == 'p'


# ---- evaluation folders --------------------------------------------------------------------------------------

def _mixed_folder(root: Path) -> Path:
    "A test folder with two of the model's classes, one it never saw, a corrupt photo and a stray file"
    for c in ('glass', 'metal', 'styrofoam'):
        (root/c).mkdir(parents=True)
        for f in sorted((SAMPLE/'valid'/('paper' if c == 'styrofoam' else c)).glob('*.jpg'))[:3]: shutil.copy(f, root/c)
    (root/'glass'/'broken.jpg').write_bytes(b'\xff\xd8\xff not really a jpeg')
    (root/'metal'/'notes.txt').write_text('taken on a Tuesday')
    return root


def test_evaluate_overlap_of_vocabularies_and_lists_bad_files(pred, tmp_path):
    ev = evaluate(pred, _mixed_folder(tmp_path/'test'), progress=False)
    assert ev.evalset.split is None and len(ev.paths) == 6
    assert ev.extra_classes == {'styrofoam': 3}
    assert ev.missing_classes == ['cardboard', 'paper', 'plastic', 'trash']
    skipped = {Path(f).name: why for f, why in ev.skipped_files}
    assert set(skipped) == {'broken.jpg', 'notes.txt'} and 'not a photo' in skipped['notes.txt']
    d = ev.to_dict()
    assert {c for c, v in d['per_class'].items() if v['support']} == {'glass', 'metal'}
    assert d['worst_class']['label'] in ('glass', 'metal')
    json.dumps(d)  # JSON-ready
    page = html_report(d, {}, 'mixed')
    assert 'styrofoam (3)' in page and 'broken.jpg' in page and 'no photos here: cardboard, paper, plastic, trash' in page


def test_bad_folders_give_clear_errors(pred, tmp_path):
    with pytest.raises(UserError, match='no such folder'): find_eval_set(tmp_path/'nope')
    (tmp_path/'empty').mkdir()
    with pytest.raises(UserError, match='no class folders'): find_eval_set(tmp_path/'empty')
    (tmp_path/'hollow'/'glass').mkdir(parents=True)
    with pytest.raises(UserError, match='no photos'): find_eval_set(tmp_path/'hollow')
    (tmp_path/'trainonly'/'train'/'glass').mkdir(parents=True)
    with pytest.raises(UserError, match='no valid/ split'): find_eval_set(tmp_path/'trainonly')
    (tmp_path/'alien'/'styrofoam').mkdir(parents=True)
    shutil.copy(PHOTOS[0], tmp_path/'alien'/'styrofoam')
    with pytest.raises(UserError, match="none of the folder's classes"): evaluate(pred, tmp_path/'alien', progress=False)
    (tmp_path/'corrupt'/'glass').mkdir(parents=True)
    (tmp_path/'corrupt'/'glass'/'a.jpg').write_bytes(b'nope')
    with pytest.raises(UserError, match='could be opened'): evaluate(pred, tmp_path/'corrupt', progress=False)


def test_write_report_is_self_contained(pred, sample_eval, tmp_path):
    paths = write_report(pred, sample_eval, tmp_path/'rep', top=4, cams=2)
    assert set(paths) == {'metrics', 'report', 'confusion_matrix', 'top_losses', 'gradcam'}
    for k in ('confusion_matrix', 'top_losses', 'gradcam'): assert Image.open(paths[k]).format == 'PNG'
    page = paths['report'].read_text()
    assert page.count('src="data:image/png;base64,') == 3 and 'src="http' not in page
    d = json.loads(paths['metrics'].read_text())
    assert d['accuracy'] == sample_eval.metrics['accuracy'] and len(d['top_losses']) == 4
    assert f'<tr class="worst"><td>{d["worst_class"]["label"]}</td>' in page


# ---- never scoring what the model trained on ------------------------------------------------------------------

def _export_recorded(data: Path, out: Path, splitter, record: bool = True) -> Path:
    "A small model over `data` (untrained: the choice of photos is under test, not accuracy), exported as training does"
    from torch import nn
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, parent_label, Resize, Learner
    from recycle_classifier.base.layout import image_files
    from recycle_classifier.data import SafePILImage
    from recycle_classifier.formats.learner import export_learner, training_record
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=splitter, item_tfms=Resize(32, method='squish')).dataloaders(data, bs=16, num_workers=0)
    learn = Learner(dls, nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6)))
    if record: learn.recycle_meta = dict(classes=list(dls.vocab), **training_record(data, dls.train.items, dls.valid.items))
    return export_learner(learn, out)


@pytest.fixture
def flat(tmp_path):
    "What `scrape` makes: one folder per class, no split; a model trained on a random 80%: (folder, model, valid, train)"
    from fastai.vision.all import RandomSplitter
    d = tmp_path/'scraped'
    for f in SAMPLE.glob('*/*/*.jpg'): (d/f.parent.name).mkdir(parents=True, exist_ok=True); shutil.copy(f, d/f.parent.name)
    model = _export_recorded(d, tmp_path/'flat.pkl', RandomSplitter(0.2, seed=3))
    meta = load_predictor(model).meta
    valid = {str(d/r['path']) for r in meta['valid_items']}
    return d, model, valid, {str(p) for p in d.glob('*/*.jpg')} - valid


@pytest.fixture
def split_model(tmp_path):
    "A copy of the sample and a model trained on its train/ split, exported with its training record"
    from fastai.vision.all import GrandparentSplitter
    d = tmp_path/'data'
    shutil.copytree(SAMPLE, d)
    return d, _export_recorded(d, tmp_path/'split.pkl', GrandparentSplitter())


def test_training_folder_scores_exactly_the_recorded_validation_photos(flat, tmp_path):
    "The issue's case: `train` split a flat folder at random; `evaluate` on that folder scores its 20%, not the rest"
    d, model, valid, train = flat
    assert len(valid) == 48 and len(train) == 192
    ev = evaluate(model, d, progress=False)
    assert {str(p) for p in ev.paths} == valid and not ({str(p) for p in ev.paths} & train)
    out = ev.to_dict()
    assert out['n'] == 48 and out['warnings'] == [] and out['scope'].startswith('the 48 validation photos recorded')
    r = run_cli('evaluate', model, d, '--out', tmp_path/'rep', '--top-losses', '2', '--cams', '0')
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path/'rep'/'metrics.json').read_text())['n'] == 48
    assert 'evaluated 48 photos' in r.stdout and 'validation photos recorded' in r.stdout and 'warning: ' not in r.stderr
    assert '\r' not in r.stdout + r.stderr   # no progress fragments when the output is not a terminal
    assert 'Scored: the 48 validation photos recorded' in (tmp_path/'rep'/'report.html').read_text()


def test_moved_validation_photos_still_count_and_missing_ones_are_reported(split_model):
    d, model = split_model
    valid = sorted((d/'valid').glob('*/*.jpg'))
    valid[0].rename(d/'valid'/'trash'/valid[0].name)            # relabelled by the cleaning stage
    valid[1].rename(d/'train'/'metal'/('moved-' + valid[1].name))  # moved out of valid/: still a validation photo
    valid[2].unlink()
    shutil.copy(next((d/'train'/'paper').glob('*.jpg')), d/'train'/'glass'/'new.jpg')  # a copy of a training photo
    ev = evaluate(model, d, progress=False)
    labels = {Path(p).name: ev.classes[y] for p, y in zip(ev.paths, ev.y_true)}
    assert len(ev.paths) == 59 and labels[valid[0].name] == 'trash' and ('moved-' + valid[1].name) in labels
    assert 'new.jpg' not in labels and ev.evalset.split is None  # photos from train/ and valid/
    assert ev.evalset.warnings == [f"1 of the model's 60 validation photos are no longer in {d} "
                                   f"(deleted, quarantined or edited); scoring the 59 found"]
    for f in d.glob('*/*/*.jpg'):
        if f.parent.parent.name == 'valid' or f.name.startswith('moved-'): f.unlink()
    with pytest.raises(UserError, match='the model trained on every photo here'): evaluate(model, d, progress=False)


def test_other_folder_leaves_out_training_photos_and_says_so(flat, tmp_path):
    "A folder holding a few training photos among others: they are left out by content, and the summary on stdout says so"
    d, model, valid, train = flat
    other = tmp_path/'other'
    picked = sorted(train)[:4] + sorted(valid)[:6]
    for f in map(Path, picked): (other/f.parent.name).mkdir(parents=True, exist_ok=True); shutil.copy(f, other/f.parent.name)
    ev = evaluate(model, other, progress=False)
    assert len(ev.paths) == 6 and not ({Path(p).name for p in ev.paths} & {Path(p).name for p in picked[:4]})
    assert ev.evalset.scope == 'the 6 photos the model did not train on (4 photos it trained on are left out, found by content)'
    r = run_cli('evaluate', model, other, '--out', tmp_path/'rep', '--top-losses', '0', '--cams', '0')
    assert r.returncode == 0, r.stdout + r.stderr
    assert '4 photos it trained on are left out' in r.stdout and 'warning' not in r.stderr
    d2 = json.loads((tmp_path/'rep'/'metrics.json').read_text())
    assert d2['n'] == 6 and d2['warnings'] == []
    for f in map(Path, picked[:4]): (other/f.parent.name/f.name).unlink()
    assert evaluate(model, other, progress=False).evalset.scope == 'all 6 photos of the folder'


def test_moved_training_folder_scores_exactly_the_recorded_validation_photos(flat, tmp_path):
    "Trained in one checkout, evaluated on a copy in another: the copy's validation photos, found by content"
    d, model, valid, train = flat
    moved = tmp_path/'clone'/'data'
    shutil.copytree(d, moved)
    ev = evaluate(model, moved, progress=False)
    assert sorted(Path(p).name for p in ev.paths) == sorted(Path(p).name for p in valid)
    assert ev.evalset.scope.startswith('the 48 validation photos recorded') and ev.evalset.warnings == []


def test_map_scores_a_folder_whose_class_names_differ(flat, tmp_path):
    d, model, valid, train = flat
    web = tmp_path/'web'
    for folder, src in [('brown-glass', 'glass'), ('tins', 'metal'), ('battery', 'paper')]:   # photos the model did not train on
        (web/folder).mkdir(parents=True)
        for f in sorted(p for p in map(Path, valid) if p.parent.name == src)[:2]: shutil.copy(f, web/folder)
    cmap = tmp_path/'map.yaml'
    cmap.write_text('glass: [brown-glass]\nmetal: [tins]\n')
    r = run_cli('evaluate', model, web, '--map', cmap, '--out', tmp_path/'rep', '--top-losses', '0', '--cams', '0')
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((tmp_path/'rep'/'metrics.json').read_text())
    assert {c: v['support'] for c, v in m['per_class'].items() if v['support']} == {'glass': 2, 'metal': 2}
    cmap.write_text('glass: [green-glass]\n')
    r = run_cli('evaluate', model, web, '--map', cmap, '--out', tmp_path/'rep2')
    assert r.returncode != 0 and 'no dataset has: green-glass' in r.stderr and len(r.stderr.strip().splitlines()) == 1



def test_models_without_a_training_record_are_evaluated_as_before_with_a_warning(tmp_path):
    from fastai.vision.all import GrandparentSplitter
    model = _export_recorded(SAMPLE, tmp_path/'old.pkl', GrandparentSplitter(), record=False)
    assert 'valid_items' not in load_predictor(model).meta
    ev = evaluate(model, SAMPLE, progress=False)
    assert ev.evalset.split == 'valid' and len(ev.paths) == 60 and ev.evalset.warnings == [LEGACY_WARNING]
    assert 'which photos it trained on' in LEGACY_WARNING



# ---- command line --------------------------------------------------------------------------------------------

def test_cli_evaluate(model_path, tmp_path):
    "The command on the ONNX file beside the export (the .pkl's report, heatmaps included, is checked above)"
    r = run_cli('evaluate', model_path.with_suffix('.onnx'), SAMPLE, '--out', tmp_path/'rep', '--top-losses', '3', '--cams', '0')
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads((tmp_path/'rep'/'metrics.json').read_text())
    assert d['n'] == 60 and d['split'] == 'valid' and d['classes'] == CLASSES
    # the same 60 photos, scored as training scored them from its cached features
    assert d['accuracy'] == pytest.approx(json.loads(model_path.with_suffix('.json').read_text())['metrics']['accuracy'], abs=1e-9)
    assert f"accuracy {d['accuracy']:.1%}" in r.stdout and '<- worst' in r.stdout
    assert (tmp_path/'rep'/'report.html').stat().st_size > 10_000


def test_cli_explain_and_errors(model_path, tmp_path):
    (tmp_path/'broken.jpg').write_text('not a photo')
    r = run_cli('explain', model_path, PHOTOS[0], PHOTOS[1], tmp_path/'broken.jpg', '--out', tmp_path/'cams')
    assert r.returncode == 1, r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path/'cams').iterdir()) == [f'{p.stem}_gradcam.png' for p in PHOTOS[:2]]
    assert 'broken.jpg: error:' in r.stderr and r.stdout.count('_gradcam.png') == 2


def test_cli_bad_model_and_empty_folder(model_path, tmp_path, capsys):
    "In-process through the real parser and `main`'s error handling (a subprocess each would only add start-up time)"
    from recycle_classifier.cli import main
    (tmp_path/'fake.pkl').write_text('not a model')
    assert main(['evaluate', str(tmp_path/'fake.pkl'), str(SAMPLE), '--out', str(tmp_path/'x')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error:') and 'not a model exported' in err
    (tmp_path/'empty').mkdir()
    assert main(['evaluate', str(model_path), str(tmp_path/'empty'), '--out', str(tmp_path/'y')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error:') and 'no class folders' in err and not (tmp_path/'y').exists()
    assert main(['explain', str(tmp_path/'fake.pkl'), str(PHOTOS[0])]) == 2
    assert 'not a model exported' in capsys.readouterr().err
