"""Several sources in one training (`train A B --map`), evaluation across sources (`evaluate --map`) and `adapt`,
through the CLI, with the mistakes a user makes reported in one line before any work."""
import json, shutil
from pathlib import Path
import pytest
from conftest import run_cli, SAMPLE

SMALL = ['--bodies', 'efficientnet_lite0@128+mobilenet_v2@96', '--epochs', '5']


@pytest.fixture(scope='module')
def web(tmp_path_factory):
    "A second source whose folders are named differently: green-glass and newspaper (copies of sample photos, recoloured), and battery"
    from PIL import Image, ImageOps
    root = tmp_path_factory.mktemp('sources')/'web'
    for folder, src in [('green-glass', 'glass'), ('newspaper', 'paper'), ('battery', 'metal')]:
        (root/folder).mkdir(parents=True)
        for f in sorted((SAMPLE/'train'/src).glob('*.jpg'))[:10]:
            ImageOps.grayscale(Image.open(f)).convert('RGB').save(root/folder/f.name)   # new content: a web photo, not the sample's
    cmap = root.parent/'map.yaml'
    cmap.write_text('glass: [green-glass]\npaper: [newspaper]\n')
    return root, cmap


@pytest.fixture(scope='module')
def two_source_model(web, tmp_path_factory):
    root, cmap = web
    out = tmp_path_factory.mktemp('models')/'two.pkl'
    r = run_cli('train', SAMPLE, root, '--map', cmap, '--out', out, *SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def test_train_merges_sources_through_the_map_and_records_them(two_source_model):
    out, stdout = two_source_model
    assert 'trashnet-sample' in stdout and 'web' in stdout                  # a column per source in the report
    assert 'left out (not in the class map): trashnet-sample/cardboard (40)' in stdout and 'web/battery (10)' in stdout
    assert '  web: ' in stdout                                               # validation accuracy per source
    meta = json.loads(out.with_suffix('.json').read_text())['model']
    assert meta['classes'] == ['glass', 'paper']
    assert meta['sources']['web']['train'] == {'glass': 8, 'paper': 8} and meta['sources']['web']['valid'] == {'glass': 2, 'paper': 2}
    assert meta['sources']['trashnet-sample']['valid'] == {'glass': 10, 'paper': 10}
    assert {r['source'] for r in meta['valid_items']} == {'trashnet-sample', 'web'}
    assert meta['class_map']['green-glass'] == 'glass'
    from recycle_classifier.formats.learner import load_learner
    learn = load_learner(out)
    assert learn.dls.vocab == ['glass', 'paper']


def test_evaluate_with_a_map_scores_only_what_the_model_did_not_train_on(two_source_model, web, tmp_path):
    out, _ = two_source_model
    root, cmap = web
    r = run_cli('evaluate', out, root, '--map', cmap, '--out', tmp_path/'rep', '--top-losses', '0', '--cams', '0')
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((tmp_path/'rep'/'metrics.json').read_text())
    assert m['n'] == 4 and 'photos it trained on are left out' in r.stdout  # web's 4 validation photos; its 16 training photos left out


@pytest.mark.parametrize('mapping, message', [
    ('glass: [amber-glass]\n', 'the class map names folders that no dataset has: amber-glass'),
    ('glass: [green-glass]\ncans: [tins]\n', 'no photos for class cans'),
    ('glass: [web, paper]\npaper: [paper]\n', "mapped to both"),
])
def test_a_bad_map_is_one_line_before_any_work(web, tmp_path, mapping, message):
    root, _ = web
    (root/'tins').mkdir(exist_ok=True)
    bad = tmp_path/'bad.yaml'
    bad.write_text(mapping)
    r = run_cli('train', SAMPLE, root, '--map', bad, '--out', tmp_path/'m.pkl')
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert 'embedding' not in r.stdout and not (tmp_path/'m.pkl').exists()
    r = run_cli('train', SAMPLE, root, '--map', tmp_path/'missing.yaml')
    assert r.returncode == 2 and 'no such class map file' in r.stderr


def test_adapt_from_the_cache_in_seconds_and_records_the_site(two_source_model, tmp_path):
    out, _ = two_source_model
    site = tmp_path/'site'
    for c in ('glass', 'paper'):
        (site/c).mkdir(parents=True)
        for f in sorted((SAMPLE/'valid'/c).glob('*.jpg'))[:3]: shutil.copy(f, site/c/('site-' + f.name))
    (site/'unlabelled').mkdir()
    shutil.copy(next((SAMPLE/'valid'/'metal').glob('*.jpg')), site/'unlabelled'/'u.jpg')
    for f in sorted((SAMPLE/'valid'/'glass').glob('*.jpg'))[3:5]: shutil.copy(f, site/'unlabelled'/('g-' + f.name))
    r = run_cli('adapt', out, site, '--out', tmp_path/'adapted.pkl')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'adapted with 6 site photos and 3 unlabelled' in r.stdout and "the base model's 24 validation photos" in r.stdout
    assert 'site memory: 9 site photos' in r.stdout
    meta = json.loads((tmp_path/'adapted.json').read_text())['model']
    rec = meta['adapted'][-1]
    assert rec['photos'] == {'glass': 3, 'paper': 3} and rec['unlabelled'] == 3
    assert rec['base'] == 'two.pkl' and (tmp_path/'adapted.onnx').exists()
    assert {k: rec['memory'][k] for k in ('k', 'alpha', 'eps', 'beta', 'photos', 'labelled', 'unlabelled')} == \
        dict(k=9, alpha=0.9, eps=1.0, beta=1.0, photos=9, labelled=6, unlabelled=3)   # k: at most the photos it has
    r = run_cli('predict', tmp_path/'adapted.onnx', SAMPLE/'valid'/'glass', '--json', '--info')
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 11
    assert json.loads(r.stdout.splitlines()[0])['info']['adapted'][-1]['memory']['photos'] == 9   # the .onnx says so too
    # the memory is in both files and they agree; it moves the site's own photos, and an old model without one loads
    import numpy as np
    from recycle_classifier.base.images import open_image
    from recycle_classifier.formats.predictor import load_predictor
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    pkl = load_predictor(tmp_path/'adapted.pkl', need_learner=True)
    ims = [open_image(f) for f in sorted(site.rglob('*.jpg')) + sorted((SAMPLE/'valid'/'paper').glob('*.jpg'))[5:]]
    probs = pkl.predict_probs(ims)
    assert np.array_equal(OnnxPredictor(tmp_path/'adapted.onnx').predict_probs(ims).argmax(1), probs.argmax(1))
    assert np.abs(OnnxPredictor(tmp_path/'adapted.onnx').predict_probs(ims) - probs).max() < 1e-3
    memory, pkl.learn.model.memory = pkl.learn.model.memory, None
    try: assert np.abs(pkl.predict_probs(ims) - probs)[:9].max() > 0.01 and len(memory.feats) == 9
    finally: pkl.learn.model.memory = memory   # load_predictor keeps predictors: leave it as it was
    assert getattr(load_predictor(out, need_learner=True).learn.model, 'memory', None) is None
    (site/'metal').mkdir(); shutil.copy(site/'unlabelled'/'u.jpg', site/'metal')
    r = run_cli('adapt', out, site, '--out', tmp_path/'x.pkl')
    assert r.returncode == 2 and 'the model has no class metal' in r.stderr and len(r.stderr.strip().splitlines()) == 1
