"""The files `train` writes, as others get them: the `.onnx` says what it is to any ONNX tool and nothing about
the trainer's folders or photos; a `.pkl` classifies with its verified `.onnx` twin (no torch) and falls back
to fastai with a note when the twin is not its own; Grad-CAM still gets the learner."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import cli, run_cli, ROOT, SAMPLE, CLASSES

PHOTOS = sorted((SAMPLE/'valid'/'glass').glob('*.jpg'))[:3] + sorted((SAMPLE/'valid'/'trash').glob('*.jpg'))[:3]


def _strings(v):
    if isinstance(v, dict): return [s for x in v.values() for s in _strings(x)]
    if isinstance(v, list): return [s for x in v for s in _strings(x)]
    return [v] if isinstance(v, str) else []


def test_onnx_describes_itself_without_the_trainers_folders(model_path):
    import onnx
    path = model_path.with_suffix('.onnx')
    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    meta = json.loads(props['recycle_classifier'])
    assert json.loads(props['classes']) == CLASSES == meta['classes']                  # for any ONNX tool
    assert m.model_version == meta['format'] == 3 and m.producer_name == 'recycle_classifier' and m.producer_version
    assert 'cardboard, glass, metal, paper, plastic, trash' in m.doc_string and "Output 'probs'" in m.doc_string
    assert [o.name for o in m.graph.output] == ['probs', 'logits', 'features'] and 'classes' in m.graph.output[0].doc_string
    assert meta['source'] == dict(file=model_path.name, sha256=json.loads(model_path.with_suffix('.json').read_text())['file']['sha256'])
    # nothing per photo and no absolute path: those stay in the .json beside the .pkl
    for key in ('valid_items', 'train_sha256', 'trained_on', 'skipped', 'feature_stats'): assert key not in meta['model'], key
    assert not [s for s in _strings(meta) if s.startswith(('/', '~'))]
    data = path.read_bytes()
    for folder in {str(Path.home()), str(ROOT), str(SAMPLE), str(model_path.parent), os.environ['TORCH_HOME'], sys.prefix}:
        assert folder.encode() not in data, folder
    assert len(props['recycle_classifier']) < 8000, len(props['recycle_classifier'])   # was 96 KB of photo hashes


def test_onnx_predictor_reads_the_training_record_from_the_json(model_path):
    "evaluate never scores training photos: the record it needs comes from the .json of the same export"
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
    p = OnnxPredictor(model_path.with_suffix('.onnx'))
    assert len(p.meta['valid_items']) == 60 and len(p.meta['train_sha256']) == 180 and p.meta['trained_on'] == str(SAMPLE)


def test_pkl_runs_its_onnx_twin_without_torch(model_path):
    "predict MODEL.pkl classifies with MODEL.onnx (its metadata records the .pkl's SHA-256): the same records, no torch"
    code = ("import sys; sys.modules['torch'] = None; sys.modules['fastai'] = None\n"
            "from recycle_classifier.cli import main\n"
            f"sys.exit(main(['predict', {str(model_path)!r}, *{list(map(str, PHOTOS))!r}, '--json', '--info']))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'note:' not in r.stderr, r.stderr
    info, *recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert info['info']['format'] == 'onnx' and info['info']['onnx_twin'] == model_path.with_suffix('.onnx').name
    onnx = [json.loads(l) for l in cli('predict', model_path.with_suffix('.onnx'), *PHOTOS, '--json').stdout.splitlines()]
    assert recs == onnx and len(recs) == len(PHOTOS)


def test_a_twin_that_is_not_its_own_is_not_used(model_path, tmp_path):
    "An .onnx beside the .pkl that does not record its hash (another export, an older file): fastai, with a one-line note"
    import shutil, onnx
    from recycle_classifier.formats.onnx_export import write_meta
    from recycle_classifier.formats.onnx_predict import read_meta
    pkl = shutil.copy(model_path, tmp_path/'m.pkl')
    shutil.copy(model_path.with_suffix('.onnx'), tmp_path/'m.onnx')
    write_meta(tmp_path/'m.onnx', dict(read_meta(tmp_path/'m.onnx'), source=None))
    r = cli('predict', pkl, *PHOTOS, '--json')
    assert r.returncode == 0, r.stderr
    notes = [l for l in r.stderr.splitlines() if l.startswith('note:')]
    assert notes == ['note: m.pkl: classifying with fastai (m.onnx beside it was not exported from this file; '
                     '`recycle-classifier export m.pkl` writes it again)'], r.stderr
    fastai = [json.loads(l) for l in r.stdout.splitlines()]
    twin = [json.loads(l) for l in cli('predict', model_path, *PHOTOS, '--json').stdout.splitlines()]
    assert [a['label'] for a in fastai] == [b['label'] for b in twin]
    assert max(abs(a['probs'][c] - b['probs'][c]) for a, b in zip(fastai, twin) for c in CLASSES) < 1e-4
    # `export` writes the twin again, which then records this .pkl
    r = run_cli('export', pkl, '--quiet')
    assert r.returncode == 0 and r.stdout.strip() == f'wrote {pkl.with_suffix(".onnx")}' and r.stderr == '', r.stderr
    from recycle_classifier.formats.predictor import load_predictor
    assert type(load_predictor(pkl)).__name__ == 'TwinPredictor'
    assert type(load_predictor(pkl, need_learner=True)).__name__ == 'LearnerPredictor'


def test_gradcam_still_gets_the_learner(model_path, tmp_path):
    "explain (and evaluate's heatmaps) on a .pkl with its twin: the learner is loaded when Grad-CAM asks for it"
    from recycle_classifier.formats.predictor import load_predictor
    pred = load_predictor(model_path)
    assert type(pred).__name__ == 'TwinPredictor' and pred._learn is None
    assert list(pred.learn.dls.vocab) == pred.classes
    r = run_cli('explain', model_path, PHOTOS[0], '--out', tmp_path/'x')
    assert r.returncode == 0, r.stderr
    assert list((tmp_path/'x').glob('*_gradcam.png'))
