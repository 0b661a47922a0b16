"""Every command, run as a script runs it (stdout and stderr redirected to pipes, a fresh process): no `\r`
progress fragments in either stream, errors and notes on stderr, and with `--json` a stdout that is nothing
but JSON lines. One small folder (four photos a class of the sample) keeps each run short."""
import json, shutil
import pytest
from conftest import cli, SAMPLE, CLASSES


def _clean_log(r, what):
    "Assert the redirected output of `r` has no progress fragments"
    for name, text in (('stdout', r.stdout), ('stderr', r.stderr)):
        assert '\r' not in text, f'{what}: carriage return in {name}:\n{text[-2000:]}'
        assert '\x1b[' not in text, f'{what}: terminal escape codes in {name}'


def _json_lines(r, what) -> list[dict]:
    "stdout of a `--json` run, each line parsed; fails on any line that is not JSON"
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert lines, f'{what}: nothing on stdout; stderr:\n{r.stderr[-2000:]}'
    recs = []
    for l in lines:
        try: recs.append(json.loads(l))
        except json.JSONDecodeError: pytest.fail(f'{what}: stdout line is not JSON: {l[:200]!r}')
    return recs


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    "Four photos of each class of the sample, copied (so commands that move or write beside photos touch nothing shared)"
    d = tmp_path_factory.mktemp('small')
    for c in CLASSES:
        (d/c).mkdir()
        for p in sorted((SAMPLE/'valid'/c).glob('*.jpg'))[:4]: shutil.copy(p, d/c/p.name)
    return d


def test_train_log_is_clean(trained):
    "The session's `train` run (text mode): no progress fragments in its log"
    _, log = trained
    assert '\r' not in log and 'validation accuracy' in log


def test_train_json(small, tmp_path):
    r = cli('train', small, '--out', tmp_path/'m.pkl', '--json', '--epochs', '2', '--arch', 'mobilenet_v2', '--size', '64')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean_log(r, 'train --json')
    [rec] = _json_lines(r, 'train --json')
    assert rec['out'] == str(tmp_path/'m.pkl') and 0 <= rec['accuracy'] <= 1 and rec['classes'] == CLASSES
    assert 'dataset' not in r.stdout.lower()   # the dataset report went to stderr


def test_predict_and_explain(model_path, small, tmp_path):
    photos = [small/'glass', small/'paper'/sorted((small/'paper').iterdir())[0].name]
    bad = tmp_path/'notes.jpg'; bad.write_text('not a photo')
    r = cli('predict', model_path, *photos, bad, '--json')
    _clean_log(r, 'predict --json')
    recs = _json_lines(r, 'predict --json')
    assert r.returncode == 1 and len(recs) == 6 and sum('error' in x for x in recs) == 1
    r = cli('predict', model_path, small/'glass', bad)
    _clean_log(r, 'predict')
    assert 'notes.jpg' in r.stderr and 'notes.jpg' not in r.stdout   # the failed file is an error line on stderr
    r = cli('explain', model_path, small/'metal', '--out', tmp_path/'cams', '--json')
    _clean_log(r, 'explain --json')
    recs = _json_lines(r, 'explain --json')
    assert r.returncode == 0 and len(recs) == 4 and all((tmp_path/'cams'/x['out'].split('/')[-1]).exists() for x in recs)


def test_evaluate(model_path, small, tmp_path):
    r = cli('evaluate', model_path, small, '--out', tmp_path/'rep', '--json', '--cams', '1', '--top-losses', '2')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean_log(r, 'evaluate --json')
    [rec] = _json_lines(r, 'evaluate --json')
    assert rec['n'] == 24 and 0 <= rec['accuracy'] <= 1 and rec['report'].endswith('report.html')
    # the text summary and its log: tests/test_evaluate.py


def test_embed(small, tmp_path):
    small_body = ('--arch', 'mobilenet_v2', '--size', '64', '--cache-dir', tmp_path/'features')
    r = cli('embed', small/'cardboard', small/'trash', *small_body, '--json')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean_log(r, 'embed --json')
    [rec] = _json_lines(r, 'embed --json')
    assert rec['photos'] == 8 and rec['embedded'] == 8 and rec['errors'] == {}
    r = cli('embed', small/'cardboard', *small_body)
    _clean_log(r, 'embed')
    assert r.returncode == 0 and '4 already in the cache' in r.stdout


def test_adapt_and_extend(model_path, small, tmp_path):
    site = tmp_path/'site'
    shutil.copytree(small, site)
    r = cli('adapt', model_path, site, '--out', tmp_path/'adapted.pkl', '--json')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean_log(r, 'adapt --json')
    [rec] = _json_lines(r, 'adapt --json')
    assert rec['site_photos'] == 24 and rec['out'] == str(tmp_path/'adapted.pkl')
    new = tmp_path/'new'; shutil.copytree(small/'trash', new)
    for p in sorted((small/'cardboard').iterdir())[:1]: shutil.copy(p, new/('c_' + p.name))
    r = cli('extend', model_path, 'mixed', new, '--out', tmp_path/'m.extended', '--json')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean_log(r, 'extend --json')
    [rec] = _json_lines(r, 'extend --json')
    assert rec['classes'][-1] == 'mixed' and rec['added'][0]['photos'] == 5
    # `export --quiet`: tests/test_model_files.py; export's clean log: tests/test_onnx.py


def test_scrape(tmp_path):
    from recycle_classifier.testing import LocalImageSearch
    photos = sorted((SAMPLE/'valid'/'glass').glob('*.jpg'))[:5]
    with LocalImageSearch() as site:
        urls = [site.add(p.name, p.read_bytes()) for p in photos]
        urls.append(site.add('gone.jpg', status=404))
        site.add_results('glass', urls)
        r = cli('scrape', '--classes', 'glass', '--dest', tmp_path/'ds', '--max-per-class', '6',
                '--search-url', site.search_url, '--json')
    _clean_log(r, 'scrape --json')
    recs = _json_lines(r, 'scrape --json')
    assert recs[0]['name'] == 'glass' and recs[0]['total'] == 5 and recs[0]['rejected'] == {'http 404': 1}
    assert recs[-1]['summary']['problems'] == []
    assert r.returncode == 0, r.stderr[-2000:]


# fewshot build and predict --json: their clean logs are checked in tests/test_fewshot.py; clean's in tests/test_clean.py
