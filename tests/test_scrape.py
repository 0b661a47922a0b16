"""Tests of the scrape stage against `LocalImageSearch` (recycle_classifier.testing), a stand-in for Bing's image
search on 127.0.0.1. No timed assertions: ordering and overlap are shown with gated answers and request counts.

The photos are real TrashNet photos (Thung & Yang 2017, MIT license) from the package's sample (`SAMPLE_DIR`)."""
import contextlib, hashlib, io, json, os, signal, socket, subprocess, sys, time, unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from recycle_classifier.base.core import SAMPLE_DIR, UserError
from recycle_classifier.base.layout import image_files
from recycle_classifier.scrape.config import ENV_SEARCH_URL, ENV_TIMEOUT, MANIFEST, load_classes
from recycle_classifier.scrape.search import SearchError, search_image_urls
from recycle_classifier.scrape.download import fetch
from recycle_classifier.scrape.verify import verify, PhotoIndex, Known
from recycle_classifier.scrape.manifest import Manifest, read_manifest, save_new
from recycle_classifier.scrape.run import scrape
from recycle_classifier.scrape.report import class_line, format_summary, MAX_FAILED_RUNS
from recycle_classifier.testing import LocalImageSearch, HANG, hostile_results, jpeg_bytes, resized

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent/'scrape_fixtures'
FAST = dict(timeout=2, retries=1, backoff=0.02, progress=False)
CLI = [sys.executable, '-m', 'recycle_classifier.cli']

def _cli_knows_scrape() -> bool:
    "Whether the main CLI has registered the scrape command yet"
    from recycle_classifier.cli import build_parser
    try: return build_parser().parse_args(['scrape', '--classes', 'x', '--dest', 'y']).func.__name__ == 'run_scrape'
    except SystemExit: return False

def _fallback_main(argv=None) -> int:
    "The main CLI's handling, for a `recycle_classifier.cli` that does not have `scrape` yet"
    import argparse
    from recycle_classifier.scrape.cli import add_command
    p = argparse.ArgumentParser(prog='recycle-classifier')
    add_command(p.add_subparsers(dest='cmd', required=True))
    a = p.parse_args(argv)
    try: return a.func(a)
    except UserError as e: print(f'error: {e}', file=sys.stderr); return 2

if _cli_knows_scrape():
    from recycle_classifier.cli import main as cli_main
else:  # until cli.py calls scrape.add_command: the same parser and error handling
    cli_main = _fallback_main
    CLI = [sys.executable, '-c', """
import argparse, sys
from recycle_classifier.base.core import UserError
from recycle_classifier.scrape.cli import add_command
p = argparse.ArgumentParser(prog='recycle-classifier'); add_command(p.add_subparsers(dest='cmd', required=True))
a = p.parse_args()
try: sys.exit(a.func(a))
except UserError as e: print(f'error: {e}', file=sys.stderr); sys.exit(2)
"""]


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope='module')
def photos():
    "Real photos per class, as the bytes a server would send"
    return {c: [f.read_bytes() for f in image_files(SAMPLE_DIR/'train'/c)] for c in ('glass', 'plastic', 'metal', 'paper')}

@pytest.fixture
def site():
    with LocalImageSearch(page_size=4) as s: yield s

jpeg = jpeg_bytes

def name_of(data: bytes) -> str:
    "The file name the stage gives the photo downloaded as `data`"
    return hashlib.sha256(data).hexdigest()[:16] + '.jpg'

def tree(dest: Path) -> dict[str, tuple[int, int]]:
    "Every file below `dest` (hidden ones too, except the lock) with its size and modification time"
    return {f.relative_to(dest).as_posix(): (f.stat().st_size, f.stat().st_mtime_ns)
            for f in dest.rglob('*') if f.is_file() and f.name != '.scrape.lock'}

def assert_consistent(dest: Path, deleted=()):
    "Each photo has one `kept` manifest record, each such record a photo (but the `deleted`); no temp files"
    latest = {(r['class'], r['url'] or r['file']): r for r in read_manifest(dest)}   # the last record of a URL holds
    kept = [r['file'] for r in latest.values() if r['status'] == 'kept']
    assert len(kept) == len(set(kept))
    kept = [f for f in kept if f not in deleted]
    photos_on_disk = sorted(f.relative_to(dest).as_posix() for f in image_files(dest))
    assert sorted(kept) == photos_on_disk
    assert not [f for f in dest.rglob('.*.tmp')]


# ---------------------------------------------------------------- classes

def test_class_files_yaml_and_toml_agree():
    want = {'plastic': ['PET bottle', 'plastic bottle'], 'Glas grün': ['green glass bottle', 'glass jar'],
            'metal': ['aluminium can'], 'café crème cups': ['café crème cups']}
    assert load_classes([str(FIXTURES/'classes.yaml')]) == want
    assert load_classes([str(FIXTURES/'classes.toml')]) == want

def test_class_names_from_command_line_are_normalised():
    decomposed = unicodedata.normalize('NFD', 'Glas grün')
    assert decomposed != 'Glas grün'
    assert load_classes([decomposed, '  soda   can ']) == {'Glas grün': ['Glas grün'], 'soda   can': ['soda can']}

@pytest.mark.parametrize('content, ext, msg', [
    ('', '.yaml', 'defines none'),
    ('# only a comment\n', '.yaml', 'defines none'),
    ('plastic: [PET bottle\n', '.yaml', 'not a valid class file'),
    ('plastic = [\n', '.toml', 'not a valid class file'),
    ('"../up": x\n', '.yaml', 'cannot start with a dot'),
    ('"a/b": x\n', '.yaml', "contains '/'"),
    ('glass: x\nGlass: y\n', '.yaml', 'given twice'),
    ('glass: [1, 2]\n', '.yaml', 'must be text'),
    ('[plastic]\nterms = ["x"]\n', '.toml', 'must be text'),
    ('yes: x\n', '.yaml', 'is not text'),
    ('- just\n- a list\n- "tab\there"\n', '.yaml', 'cannot be part of a folder name'),
])
def test_bad_class_files_are_user_errors(tmp_path, content, ext, msg):
    f = tmp_path/f'classes{ext}'
    f.write_text(content, encoding='utf-8')
    with pytest.raises(UserError, match=msg): load_classes([str(f)])

def test_missing_class_file_and_empty_list():
    with pytest.raises(UserError, match='class file not found'): load_classes(['nowhere.yaml'])
    with pytest.raises(UserError, match='no classes'): load_classes([])


# ---------------------------------------------------------------- search

def test_search_pages_through_results_with_bing_parser(site):
    urls = [site.add(f'p{i}.jpg', b'x') for i in range(9)] + [site.add('q?a=1&b=2', b'x')]
    site.add_results('Glas grün', urls)
    assert '&amp;b=2' in site.page('Glas grün', 6, 35)        # escaped in the markup...
    assert search_image_urls('Glas grün', 50, site.search_url) == urls   # ...and unescaped by the parser
    assert len(site.searches()) > 2                            # several pages, until they ran dry
    assert search_image_urls('Glas grün', 3, site.search_url) == urls[:3]
    assert search_image_urls('no such thing', 10, site.search_url) == []

def test_search_endpoint_from_environment(site, monkeypatch):
    site.add_results('can', [site.add('c.jpg', b'x')])
    monkeypatch.setenv(ENV_SEARCH_URL, site.search_url)
    assert search_image_urls('can', 5) == [site.url('c.jpg')]
    monkeypatch.setenv(ENV_SEARCH_URL, 'ftp://example')
    with pytest.raises(UserError, match='search URL must look like'): search_image_urls('can', 5)

def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/images/async'

def test_search_errors_are_clear(site):
    with pytest.raises(SearchError, match='cannot reach the image search at http://127.0.0.1'):
        search_image_urls('can', 5, closed_port_url(), retries=0)
    with pytest.raises(SearchError, match='answered HTTP 404'):
        search_image_urls('can', 5, site.base() + '/wrong/path', retries=0)


# ---------------------------------------------------------------- download

def test_fetch_outcomes(site, photos):
    p = photos['glass']
    routes = {
        'ok.jpg': dict(data=p[0]),
        'flaky.jpg': dict(data=p[1], fail_times=2),                 # 503, 503, then the photo
        'gone.jpg': dict(status=404),
        'moved.jpg': dict(redirect='ok.jpg'),
        'loop.jpg': dict(redirect='loop.jpg'),
        'late.jpg': dict(data=p[2], delay=6),                      # answers after the timeout
        'stall.jpg': dict(data=p[3], stall_after=1000),            # stops half-way
        'slow.jpg': dict(data=p[4], delay=0.2),                    # slow but within the timeout
    }
    urls = {n: site.add(n, **r) for n, r in routes.items()}
    with ThreadPoolExecutor(len(urls)) as ex:
        got = dict(zip(urls, ex.map(lambda u: fetch(u, timeout=2, retries=2, backoff=0.02), urls.values())))
    assert got['ok.jpg'].data == p[0] and got['slow.jpg'].data == p[4]
    assert (got['flaky.jpg'].status, got['flaky.jpg'].attempts, got['flaky.jpg'].data) == ('ok', 3, p[1])
    assert got['moved.jpg'].final_url == urls['ok.jpg'] and got['moved.jpg'].data == p[0]
    outcome = {n: (f.status, f.reason, f.attempts) for n, f in got.items()}
    assert outcome['gone.jpg'] == ('rejected', 'http 404', 1)        # not retried
    assert outcome['loop.jpg'][:2] == ('rejected', 'too many redirects')
    assert outcome['late.jpg'] == ('failed', 'timeout', 1)           # a timeout is not retried within the run
    assert outcome['stall.jpg'] == ('failed', 'timeout', 1)
    hits = site.hits()
    assert (hits['flaky.jpg'], hits['gone.jpg'], hits['late.jpg']) == (3, 1, 1)
    assert fetch('file:///etc/passwd').reason == 'bad url'
    assert fetch(closed_port_url(), retries=0).reason == 'connection'

def test_per_host_and_pool_bounds(photos, tmp_path):
    "The run never has more than `per_host` requests on a host, nor more than `workers` in all"
    with LocalImageSearch(hosts=2) as s:
        urls = [s.add(f'{i}.jpg', photos['plastic'][i], host=i % 2, delay=0.15) for i in range(16)]
        s.add_results('bottle', urls[:8]); s.add_results('tub', urls[8:])
        report = scrape({'a': 'bottle', 'b': 'tub'}, tmp_path, 8, search_url=s.search_url, workers=5, per_host=3, **FAST)
        assert [c.kept for c in report.classes] == [8, 8]
        assert max(s.peak[0], s.peak[1]) <= 3 and s.peak[0] + s.peak[1] >= 3   # bounded, and the bound was reached


# ---------------------------------------------------------------- verify and normalise

def test_verify_normalises(photos):
    src = Image.open(io.BytesIO(photos['glass'][0]))
    exif = Image.Exif(); exif[0x0112] = 6                         # rotate 90 degrees to display
    assert verify(jpeg(src, exif=exif)).size == (src.height, src.width)
    big = verify(jpeg(src.resize((src.width * 5, src.height * 5))))
    assert max(big.size) == 512 and big.size == (384, 512)
    buf = io.BytesIO(); src.convert('RGBA').save(buf, 'PNG')
    png = Image.open(io.BytesIO(verify(buf.getvalue()).jpeg))
    assert (png.format, png.mode) == ('JPEG', 'RGB')
    cmyk = io.BytesIO(); src.convert('CMYK').save(cmyk, 'JPEG')
    assert Image.open(io.BytesIO(verify(cmyk.getvalue()).jpeg)).mode == 'RGB'
    assert verify(photos['glass'][0], max_side=100).size == (75, 100)

@pytest.mark.parametrize('kind, reason', [
    ('html', 'html'), ('html-as-jpeg', 'html'), ('truncated', 'truncated'), ('text', 'not an image'),
    ('empty', 'not an image'), ('tiny', 'too small'), ('bomb', 'too large')])
def test_verify_rejects(photos, kind, reason):
    page = b'<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>'
    bomb = io.BytesIO(); Image.new('L', (3000, 3000)).save(bomb, 'PNG')
    data, ctype = {'html': (page, 'text/html'), 'html-as-jpeg': (page, 'image/jpeg'),
                   'truncated': (photos['glass'][0][:2500], 'image/jpeg'), 'text': (b'GIF89a, or so it says', 'image/gif'),
                   'empty': (b'', 'image/jpeg'), 'tiny': (resized(photos['glass'][0], (60, 80)), 'image/jpeg'),
                   'bomb': (bomb.getvalue(), 'image/png')}[kind]
    with pytest.raises(Exception) as e: verify(data, ctype, max_pixels=5_000_000)
    assert e.value.reason == reason and e.value.status == 'rejected'

def test_near_duplicates_but_not_similar_photos(photos):
    idx = PhotoIndex(10)
    for i, data in enumerate(photos['glass'][:10]):
        p = verify(data)
        assert idx.match('glass', p.sha256, p.phash, p.dhash) is None, f'photo {i} taken for a duplicate'
        idx.add(Known('glass', f'glass/{i}.jpg', p.sha256, p.phash, p.dhash))
    copy = verify(resized(photos['glass'][4], (115, 153), quality=50))
    kind, k = idx.match('glass', copy.sha256, copy.phash, copy.dhash)
    assert (kind, k.file) == ('near-duplicate', 'glass/4.jpg')
    assert idx.match('metal', copy.sha256, copy.phash, copy.dhash)[1].cls == 'glass'


# ---------------------------------------------------------------- files and manifest

def test_save_new_never_overwrites(tmp_path):
    assert save_new(tmp_path, 'a.jpg', b'first')
    assert not save_new(tmp_path, 'a.jpg', b'second')
    assert (tmp_path/'a.jpg').read_bytes() == b'first'
    assert [f.name for f in tmp_path.iterdir()] == ['a.jpg']

def test_manifest_survives_a_torn_line(tmp_path):
    Manifest(tmp_path).append({'class': 'c', 'url': 'http://h/1', 'status': 'kept'})
    with open(tmp_path/MANIFEST, 'a') as f: f.write('{"class": "c", "url": "http://h/2", "sta')
    Manifest(tmp_path).append({'class': 'c', 'url': 'http://h/3', 'status': 'failed'})
    assert [r['url'] for r in read_manifest(tmp_path)] == ['http://h/1', 'http://h/3']


# ---------------------------------------------------------------- the whole stage

def trouble_site(site, photos):
    "Two classes' results with every kind of trouble; returns the bytes expected to be kept, per class"
    g, pl = photos['glass'], photos['plastic']
    add = site.add
    glass = [add(f'glass{i}.jpg', g[i]) for i in range(6)] + [
        add('slow.jpg', g[6], delay=0.2),
        add('moved.jpg', redirect='glass7.jpg'),
        add('flaky.jpg', g[8], fail_times=1),
        add('gone.jpg', status=404),
        add('late.jpg', g[9], delay=5),
        add('error-page.jpg', b'<html><body>Internal error</body></html>', content_type='text/html'),
        add('html-as-jpeg.jpg', b'<!doctype html><html><body>Hotlinking denied</body></html>'),
        add('cut.jpg', g[10][:2500]),
        add('thumb.jpg', resized(g[11], (48, 64))),
        add('mirror/glass0.jpg', g[0]),                      # the same file at another address
        add('glass1-small.jpg', resized(g[1], (150, 200))),  # the same photo, resized and re-compressed
    ]
    add('glass7.jpg', g[7])
    src = Image.open(io.BytesIO(pl[5])); exif = Image.Exif(); exif[0x0112] = 8
    rotated_big = jpeg(src.resize((src.width * 3, src.height * 3)), exif=exif)
    plastic = [add(f'plastic{i}.jpg', pl[i]) for i in range(5)] + [
        add('rotated.jpg', rotated_big), add('shared.jpg', g[2], delay=0.5), glass[3]]   # glass2.jpg is kept first
    site.add_results('green glass bottle', glass[::2])
    site.add_results('glass jar', glass[1::2])
    site.add_results('PET bottle', plastic)
    return {'Glas grün': [g[i] for i in range(9)], 'plastic': pl[:5] + [rotated_big]}

CLASSES = {'Glas grün': ['green glass bottle', 'glass jar'], 'plastic': ['PET bottle']}

def test_scrape_keeps_clean_photos_and_records_everything(site, photos, tmp_path):
    expected = trouble_site(site, photos)
    dest = tmp_path/'data'
    report = scrape(CLASSES, dest, 50, search_url=site.search_url, **FAST)
    g, p = report.classes
    # the kept set: exactly the good photos, named by content hash, normalised
    for cls, datas in expected.items():
        assert sorted(f.name for f in image_files(dest/cls)) == sorted(map(name_of, datas)), cls
    for f in image_files(dest):
        im = Image.open(f)
        assert (im.format, im.mode) == ('JPEG', 'RGB') and max(im.size) <= 512
    big = Image.open(dest/'plastic'/name_of(expected['plastic'][-1]))
    assert big.size == (512, 384)                          # EXIF rotation applied, longest side capped
    # rejections and failures by reason
    assert (g.found, g.tried, g.downloaded, g.kept, g.total) == (17, 17, 15, 9, 9)
    assert g.rejected == Counter({'http 404': 1, 'html': 2, 'truncated': 1, 'too small': 1, 'duplicate': 1,
                                  'near-duplicate': 1})
    assert g.failed == Counter({'timeout': 1})
    assert (p.found, p.tried, p.kept, p.total) == (8, 7, 6, 6)
    assert p.rejected == Counter({'conflict': 2})
    assert {(c['url'].rsplit('/', 1)[1], c['conflict_with']) for c in p.conflicts} == {
        ('shared.jpg', 'Glas grün'), ('glass3.jpg', 'Glas grün')}
    assert site.hits()['glass3.jpg'] == 1                  # kept for glass: not downloaded again for plastic
    assert report.problems() == []
    # the manifest: one line per URL, with its class, query, status, reason, hashes
    recs = read_manifest(dest)
    assert len(recs) == 17 + 8
    by_url = {(r['class'], r['url'].rsplit('/img/', 1)[1]): r for r in recs}
    moved = by_url['Glas grün', 'moved.jpg']
    assert (moved['status'], moved['query'], moved['final_url'].endswith('/img/glass7.jpg')) == ('kept', 'glass jar', True)
    assert by_url['Glas grün', 'late.jpg']['status'] == 'failed'
    assert by_url['Glas grün', 'mirror/glass0.jpg']['same_as'] == f'Glas grün/{name_of(photos["glass"][0])}'
    kept = [r for r in recs if r['status'] == 'kept']
    assert all(len(r['sha256']) == 64 and len(r['phash']) == 16 and r['query'] for r in kept)
    assert_consistent(dest)
    summary = format_summary(report)
    assert 'Glas grün' in summary and 'r: near-duplicate' in summary and 'f: timeout' in summary
    assert 'Glas grün: 9 photos, 9 new' in summary
    assert 'conflict:' in summary

    # a second run downloads nothing new: only the URL that timed out is tried again
    before, hits = tree(dest), site.hits()
    again = scrape(CLASSES, dest, 50, search_url=site.search_url, **FAST)
    assert site.hits() - hits == Counter({'late.jpg': 1})
    assert [(c.kept, c.tried, c.total) for c in again.classes] == [(0, 1, 9), (0, 0, 6)]
    assert again.problems() == []
    assert class_line(again.classes[1]) == 'plastic: 6 photos, no new results'
    after = tree(dest)
    assert {k: v for k, v in after.items() if k != MANIFEST} == {k: v for k, v in before.items() if k != MANIFEST}
    assert [r['url'].rsplit('/', 1)[1] for r in read_manifest(dest)[len(recs):]] == ['late.jpg']

def test_resume_adopts_user_photos_and_respects_deletions(site, photos, tmp_path):
    g = photos['glass']
    dest = tmp_path/'data'
    (dest/'glass').mkdir(parents=True)
    (dest/'glass'/'mine.jpg').write_bytes(g[0])                           # a user's own photo
    (dest/'glass'/'.0123456789abcdef.jpg.4242.tmp').write_bytes(b'half')  # left by a cut run
    (dest/'glass'/'.notes').write_text('mine')                            # a user's hidden file
    clash = dest/'glass'/name_of(g[2])                                    # a file already at the name g[2] gets
    clash.write_bytes(g[3])
    urls = [site.add(f'g{i}.jpg', g[i]) for i in range(5)]
    site.add_results('glass', urls)
    report = scrape(['glass'], dest, 4, search_url=site.search_url, **FAST)
    c = report.classes[0]
    assert c.found == 4                               # twice the two photos still needed
    assert c.rejected == Counter({'duplicate': 3})    # g0 and g3 are the user's photos; g2's file name is taken
    assert (c.kept, c.total) == (1, 3)
    assert (dest/'glass'/'mine.jpg').read_bytes() == g[0] and clash.read_bytes() == g[3]   # untouched
    assert not (dest/'glass'/'.0123456789abcdef.jpg.4242.tmp').exists()
    assert (dest/'glass'/'.notes').read_text() == 'mine'
    adopted = {r['file'] for r in read_manifest(dest) if r.get('reason') == 'adopted'}
    assert adopted == {'glass/mine.jpg', f'glass/{clash.name}'}
    assert_consistent(dest)
    # a complete class: a re-run makes no request at all
    n_search = len(site.searches())
    assert scrape(['glass'], dest, 3, search_url=site.search_url, **FAST).classes[0].full
    assert len(site.searches()) == n_search
    # a photo the user deleted is not downloaded again; the search now asks for results beyond those seen
    deleted = dest/'glass'/name_of(g[1])
    deleted.unlink()
    hits = site.hits()
    site.add_results('glass', urls + [site.add('g5.jpg', g[5])])
    again = scrape(['glass'], dest, 4, search_url=site.search_url, **FAST).classes[0]
    assert again.found == 6
    assert site.hits() - hits == Counter({'g4.jpg': 1, 'g5.jpg': 1}) and not deleted.exists()
    assert (again.kept, again.total) == (2, 4)
    assert_consistent(dest, deleted=[f'glass/{deleted.name}'])

def test_scrape_stops_at_max_per_class(site, photos, tmp_path):
    urls = [site.add(f'm{i}.jpg', photos['metal'][i]) for i in range(20)]
    site.add_results('metal', urls)
    report = scrape(['metal'], tmp_path, 3, search_url=site.search_url, workers=2, **FAST)
    assert (report.classes[0].kept, len(image_files(tmp_path/'metal'))) == (3, 3)
    assert len(read_manifest(tmp_path)) == 3
    assert sum(site.hits().values()) <= 7                  # a small window ahead, not all twenty


# ---------------------------------------------------------------- bad input, through the command line

def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_SEARCH_URL, ENV_TIMEOUT)}
    return {**env, 'PYTHONPATH': str(ROOT), **extra}

def main_in_process(argv, env=None) -> tuple[int, str, str]:
    "Run the command line's `main` here (no torch start-up to pay), with `env` set: exit code, stdout, stderr"
    env, out, err = env or {}, io.StringIO(), io.StringIO()
    saved = {k: os.environ.pop(k, None) for k in (ENV_SEARCH_URL, ENV_TIMEOUT, *env)}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: rc = cli_main(argv)
            except SystemExit as e: rc = e.code
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None: os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()

@pytest.fixture(scope='module')
def cli_runs(tmp_path_factory, photos):
    "Run the command for each case against one stand-in: two as separate processes, the rest through `main`"
    tmp = tmp_path_factory.mktemp('cli')
    site = LocalImageSearch().start()
    m = photos['metal']
    site.add_results('aluminium can', [site.add(f'can{i}.jpg', m[i]) for i in range(3)])
    site.add_results('dead links', [site.add('dead1.jpg', status=503), site.add('dead2.jpg', status=404),
                                    site.add('dead3.jpg', m[5], delay=5)])
    for case in ('no-results', 'all-fail', 'server-down'):   # each destination already holds a kept photo
        scrape({'metal': 'aluminium can'}, tmp/case, 1, search_url=site.search_url, **FAST)
    before = {case: tree(tmp/case) for case in ('no-results', 'all-fail', 'server-down')}
    (tmp/'empty.yaml').write_text('# no classes yet\n')
    (tmp/'bins.yaml').write_text('Métal léger: [aluminium can]\n', encoding='utf-8')
    (tmp/'a-file').write_text('not a folder')
    s = ['scrape', '--timeout', '2', '--retries', '1', '--backoff', '0.02', '--quiet']
    separate = {
        'ok': (s + ['--classes', str(tmp/'bins.yaml'), '--dest', str(tmp/'ok')], {ENV_SEARCH_URL: site.search_url}),
        'server-down': (s + ['--classes', 'metal', '--dest', str(tmp/'server-down'), '--search-url', closed_port_url()], {}),
    }
    procs = {k: subprocess.Popen(CLI + args, env=cli_env(**env), cwd=tmp, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, (args, env) in separate.items()}
    here = {
        'no-results': (s + ['--classes', 'metal', 'unheard of', '--dest', str(tmp/'no-results'), '--search-url', site.search_url], {}),
        'all-fail': (s + ['--classes', 'dead links', '--dest', str(tmp/'all-fail'), '--search-url', site.search_url], {}),
        'unwritable': (s + ['--classes', 'metal', '--dest', str(tmp/'a-file'/'data'), '--search-url', site.search_url], {}),
        'empty-classes': (s + ['--classes', str(tmp/'empty.yaml'), '--dest', str(tmp/'x'), '--search-url', site.search_url], {}),
        'bad-option': (s + ['--classes', 'metal', '--dest', str(tmp/'y'), '--max-per-class', '0'], {}),
        'bad-timeout': (['scrape', '--classes', 'metal', '--dest', str(tmp/'z')], {ENV_TIMEOUT: 'soon'}),
        'env-search-url': (s + ['--classes', 'aluminium can', '--dest', str(tmp/'env')], {ENV_SEARCH_URL: site.search_url}),
    }
    out = {k: main_in_process(args, env) for k, (args, env) in here.items()}
    out.update({k: (p.wait(timeout=180), *p.communicate()) for k, p in procs.items()})
    site.stop()
    return tmp, out, before

def test_cli_ok(cli_runs):
    tmp, out, _ = cli_runs
    rc, stdout, stderr = out['ok']
    assert rc == 0, stderr
    assert len(image_files(tmp/'ok'/'Métal léger')) == 3
    assert 'Métal léger' in stdout and 'downloaded' in stdout and 'error' not in stderr
    assert_consistent(tmp/'ok')
    rc, stdout, stderr = out['env-search-url']
    assert rc == 0 and len(image_files(tmp/'env'/'aluminium can')) == 3, stderr

@pytest.mark.parametrize('case, code, message', [
    ('no-results', 1, "error: class 'unheard of' has no photos: the search found nothing for 'unheard of'"),
    ('all-fail', 1, "error: class 'dead links': every download failed (3 tried;"),
    ('server-down', 2, 'error: cannot reach the image search at http://127.0.0.1:'),
    ('unwritable', 2, 'error: cannot write to the destination'),
    ('empty-classes', 2, 'empty.yaml: the file defines none'),
    ('bad-option', 2, 'must be at least 1, not 0'),
    ('bad-timeout', 2, f'${ENV_TIMEOUT} must be a number of seconds'),
])
def test_cli_bad_input(cli_runs, case, code, message):
    tmp, out, before = cli_runs
    rc, stdout, stderr = out[case]
    assert rc == code, (stdout, stderr)
    assert message in stderr, stderr
    assert 'Traceback' not in stderr
    if case in before:   # what was kept before is still there, untouched
        after = tree(tmp/case)
        assert all(after.get(f) == v for f, v in before[case].items() if f != MANIFEST)
        assert len(image_files(tmp/case/'metal')) == 1
        assert_consistent(tmp/case)
    if case == 'no-results': assert not (tmp/case/'unheard of').exists()   # no empty class folder

def test_ctrl_c_leaves_a_consistent_folder_and_resumes(photos, tmp_path):
    with LocalImageSearch() as site:
        urls = [site.add(f'p{i}.jpg', photos['paper'][i], delay=0.4) for i in range(16)]
        site.add_results('paper', urls)
        dest = tmp_path/'data'
        args = ['scrape', '--classes', 'paper', '--dest', str(dest), '--workers', '2', '--max-per-class', '16',
                '--search-url', site.search_url, '--timeout', '5']
        # a shell that runs this suite in the background makes it (and so its children) ignore SIGINT; a handled
        # signal is reset to the default in the child, so handle it here while the child starts
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try: proc = subprocess.Popen(CLI + args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally: signal.signal(signal.SIGINT, previous)
        deadline = time.monotonic() + 60
        while sum(r['status'] == 'kept' for r in read_manifest(dest)) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert 'interrupted' in stderr and 'Traceback' not in stderr
        assert_consistent(dest)
        first = {r['url'] for r in read_manifest(dest) if r['status'] == 'kept'}
        assert 3 <= len(first) < 16
        hits = site.hits()
        report = scrape(['paper'], dest, 16, search_url=site.search_url, workers=4, **{**FAST, 'timeout': 5})
        assert report.classes[0].total == 16
        assert not {u.rsplit('/', 1)[1] for u in first} & set(site.hits() - hits)   # kept ones not fetched again
        assert_consistent(dest)


# ---------------------------------------------------------------- one pool, results as they complete, the deadline

def wait_until(cond, what: str, bound: float = 60):
    "Poll `cond` until it holds; fail (not a timing assertion: a generous bound against hanging forever)"
    end = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < end, f'still waiting for {what}'
        time.sleep(0.02)

def kept_urls(dest) -> set[str]:
    return {r['url'].rsplit('/', 1)[1] for r in read_manifest(dest) if r['status'] == 'kept'}

def test_a_hanging_server_delays_no_other_photo_or_class(site, photos, tmp_path):
    g, p = photos['glass'], photos['plastic']
    held = __import__('threading').Event()
    site.add_results('glass', [site.add('held.jpg', g[0], gate=held)] + [site.add(f'g{i}.jpg', g[i]) for i in range(1, 5)])
    site.add_results('plastic', [site.add(f'p{i}.jpg', p[i]) for i in range(4)])
    out = {}
    t = __import__('threading').Thread(target=lambda: out.update(r=scrape(['glass', 'plastic'], tmp_path, 10,
                                                                          search_url=site.search_url, timeout=60, progress=False)))
    t.start()
    others = {f'g{i}.jpg' for i in range(1, 5)} | {f'p{i}.jpg' for i in range(4)}
    try:
        wait_until(lambda: others <= kept_urls(tmp_path), 'the photos of the other servers')
        assert t.is_alive() and site.in_flight() == 1          # the held answer is still pending meanwhile
        assert 'held.jpg' not in kept_urls(tmp_path)
    finally: held.set()
    t.join(60)
    assert kept_urls(tmp_path) == others | {'held.jpg'}
    assert [c.kept for c in out['r'].classes] == [5, 4]
    assert_consistent(tmp_path)

def test_next_class_is_searched_while_the_previous_downloads(site, photos, tmp_path):
    "The first class's photos are answered only once the second class's search has arrived"
    g, p = photos['glass'], photos['plastic']
    gate = site.searched('PET bottle')
    site.add_results('glass jar', [site.add(f'g{i}.jpg', g[i], gate=gate) for i in range(3)])
    site.add_results('PET bottle', [site.add(f'p{i}.jpg', p[i]) for i in range(3)])
    report = scrape({'glass': 'glass jar', 'plastic': 'PET bottle'}, tmp_path, 10, search_url=site.search_url,
                    timeout=30, progress=False)
    assert [c.kept for c in report.classes] == [3, 3]          # a run that searched after downloading would time out
    assert list(dict.fromkeys(site.searches())) == ['glass jar', 'PET bottle']

def test_same_url_for_two_classes_is_fetched_once_and_kept_by_the_first(site, photos, tmp_path):
    g = photos['glass']
    shared = site.add('shared.jpg', g[0], delay=0.3)
    site.add_results('jar', [shared, site.add('g1.jpg', g[1])])
    site.add_results('bottle', [shared, site.add('g2.jpg', g[2])])
    report = scrape({'jar': 'jar', 'bottle': 'bottle'}, tmp_path, 10, search_url=site.search_url, **FAST)
    assert site.hits()['shared.jpg'] == 1
    assert sorted(f.name for f in image_files(tmp_path/'jar')) == sorted([name_of(g[0]), name_of(g[1])])
    assert report.classes[1].rejected == Counter({'conflict': 1}) and report.classes[1].kept == 1

def test_of_two_near_copies_the_larger_is_kept_whichever_arrives_first(site, photos, tmp_path):
    g = photos['glass']
    big = site.add('big.jpg', g[3], delay=0.3)                      # the original arrives last
    small = site.add('small.jpg', resized(g[3], (144, 192), quality=60))   # the sample's photos are 192 x 256
    site.add_results('jar', [small, big])
    report = scrape(['jar'], tmp_path, 10, search_url=site.search_url, **FAST)
    assert [f.name for f in image_files(tmp_path/'jar')] == [name_of(g[3])]
    c = report.classes[0]
    assert (c.kept, c.rejected) == (1, Counter({'near-duplicate': 1}))
    last = {r['url'].rsplit('/', 1)[1]: r['status'] for r in read_manifest(tmp_path)}
    assert last == {'small.jpg': 'rejected', 'big.jpg': 'kept'}
    assert_consistent(tmp_path)

def test_deadline_ends_the_run_while_servers_hang(site, photos, tmp_path):
    m = photos['metal']
    site.add_results('can', [site.add('ok.jpg', m[0])] + [site.add(f'h{i}.jpg', m[i], delay=HANG) for i in range(1, 4)])
    t0 = time.monotonic()
    report = scrape(['can'], tmp_path, 10, search_url=site.search_url, timeout=120, deadline=2, progress=False)
    assert time.monotonic() - t0 < 60                              # far less than one request's timeout
    c = report.classes[0]
    assert report.deadline_hit and (c.kept, c.not_tried) == (1, 3)
    assert any('deadline' in w for w in report.warnings()) and report.problems() == []
    assert [r['url'].rsplit('/', 1)[1] for r in read_manifest(tmp_path)] == ['ok.jpg']   # nothing recorded for the rest
    assert_consistent(tmp_path)


# ---------------------------------------------------------------- hostile results, re-runs and exit codes

def test_hostile_results_and_reruns_through_the_command(photos, tmp_path):
    g, p = photos['glass'], photos['plastic']
    with LocalImageSearch(hosts=4) as site:
        jars, keep_jars = hostile_results(site, 'glass jar', g[:8], g[8])
        shared = next(u for u in jars if u.endswith('/0.jpg'))
        tubs, keep_tubs = hostile_results(site, 'plastic tub', p[:8], p[8], shared=shared, seed=1)
        args = ['scrape', '--classes', 'glass jar', 'plastic tub', '--dest', str(tmp_path), '--search-url', site.search_url,
                '--timeout', '1', '--retries', '1', '--backoff', '0.02', '--quiet']
        rc, out, err = main_in_process(args)
        assert rc == 0, err
        for cls, keep in (('glass jar', keep_jars), ('plastic tub', keep_tubs)):
            assert sorted(f.name for f in image_files(tmp_path/cls)) == sorted(map(name_of, keep)), cls
        assert 'glass jar: 8 photos, 8 new' in out
        retried = {u.rsplit('/img/', 1)[1] for u in jars + tubs if u.endswith(('/hang.jpg', '/500.jpg'))}
        for run in range(2, MAX_FAILED_RUNS + 2):                  # re-runs: only the failed URLs are tried again
            before, hits = tree(tmp_path), site.hits()
            rc, out, err = main_in_process(args)
            assert rc == 0, err
            assert set(site.hits() - hits) == (retried if run <= MAX_FAILED_RUNS else set())
            assert {k: v for k, v in tree(tmp_path).items() if k != MANIFEST} == {k: v for k, v in before.items() if k != MANIFEST}
            assert 'glass jar: 8 photos, no new results' in out and 'plastic tub: 8 photos, no new results' in out
        assert f'2 URLs skipped (failed in {MAX_FAILED_RUNS} runs)' in out
        assert_consistent(tmp_path)
