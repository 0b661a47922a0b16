"""The tour (nbs/tour.ipynb) still shows what its kept outputs show.

The tour is saved with its outputs (text and pictures). nbdev-test runs it with the other notebooks, and under a
test run (IN_TEST, a private RECYCLE_CLASSIFIER_CACHE_DIR, as scripts/test.sh sets them) the tour leaves a
transcript beside that feature cache: what each cell printed and how many pictures it showed (see its first hidden
cell). These tests compare that transcript with the kept outputs, so the tour runs once per test run; without a
transcript of the current notebook (pytest on its own), the fixture runs the tour first, with nbdev-test.

What may differ from run to run is normalised (timings, the temporary folder, ports, dates, hashes, feature-cache
hits, the machine's load); every other number may move by a little (a photo or two of the sample), and all text
must be the same. A step whose output changes meaningfully fails the comparison."""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

TOUR = ROOT/'nbs'/'tour.ipynb'
BIN = Path(sys.executable).parent
MIN_PICTURES = 6            # photo grid, loss, confusion matrix, top losses, Grad-CAM, app screenshot (issue 26)
MAX_BYTES = 3_000_000       # pictures sized sensibly
ATOL, RTOL = 3, 0.1         # how far a number may move: counts of a 10-photo class, percentages of 50 photos

# ---------------------------------------------------------------- normalising and comparing outputs

_SUBS = [
    (re.compile(r'(?:/[^\s/]+)*/recycle-tour-[A-Za-z0-9_]+'), '<work>'),                # the tour's temporary folder
    (re.compile(r'127\.0\.0\.1:\d+'), '127.0.0.1:<port>'), (re.compile(r'--port \d+'), '--port <port>'),
    (re.compile(r'\(feature cache [^)]*\)'), '(feature cache <cache>)'),
    (re.compile(r'\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:[+-]\d\d:\d\d|Z)?'), '<date>'),
    (re.compile(r'\b[0-9a-f]{12,}\b'), '<hash>'),
    (re.compile(r'\d+ from the (?:feature )?cache, \d+ embedded'), '<cache>'),     # notebooks share the test cache
    (re.compile(r'load average -?[\d.]+'), 'load average <load>'),
    (re.compile(r'(?<![\w.])\d+(?:\.\d+)?(?: ?(?:s|ms|seconds))(?![\w])'), '<t>'),  # timings
]
_NUMBER = re.compile(r'(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])')
_PY_WARNING = re.compile(r'^\S+:\d+: \w*Warning: |^\s+warnings\.warn\(')


def normalised(text: str) -> list[tuple[str, tuple[float, ...]]]:
    "The non-empty lines of `text` as (skeleton, numbers): run-dependent parts replaced, numbers taken out as '#'"
    out = []
    for line in text.splitlines():
        if not line.strip() or _PY_WARNING.search(line): continue
        for pat, rep in _SUBS: line = pat.sub(rep, line)
        out.append((_NUMBER.sub('#', line.rstrip()), tuple(float(x) for x in _NUMBER.findall(line))))
    return sorted(out)   # lines of concurrent work (scrape's classes) may come in either order


def _close(a: float, b: float) -> bool: return abs(a - b) <= max(ATOL, RTOL * max(abs(a), abs(b)))


def differences(kept: str, ran: str) -> list[str]:
    "How the text `ran` differs from `kept`, beyond what may differ from run to run (empty: the same)"
    k, r = normalised(kept), normalised(ran)
    if [s for s, _ in k] != [s for s, _ in r]:
        ks, rs = [s for s, _ in k], [s for s, _ in r]
        return ([f'kept only: {s}' for s in ks if s not in rs] + [f'new: {s}' for s in rs if s not in ks]
                or [f'lines repeated differently: {len(ks)} kept, {len(rs)} now'])
    return [f'{s}: kept {a}, now {b}' for (s, a), (_, b) in zip(k, r) if len(a) != len(b) or not all(map(_close, a, b))]


# ---------------------------------------------------------------- the notebook's kept outputs and a run's transcript

def _sha(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


def _picture(data: dict) -> bool: return any(k.startswith('image/') for k in data)

def kept_outputs(path=TOUR) -> dict:
    "Per code cell id: the stdout and stderr kept in the notebook, its value's text (not a picture's), its pictures and outputs"
    out = {}
    for c in json.loads(Path(path).read_text())['cells']:
        if c['cell_type'] != 'code': continue
        kept = dict(stdout='', stderr='', result='', pictures=0, outputs=len(c['outputs']))
        for o in c['outputs']:
            if o['output_type'] == 'stream': kept[o['name']] += ''.join(o['text'])
            data = o.get('data', {})
            kept['pictures'] += _picture(data)
            if o['output_type'] == 'execute_result' and not _picture(data): kept['result'] = ''.join(data.get('text/plain', ''))
        out[c['id']] = kept
    return out


def executed_cells(path=TOUR) -> list:
    "The code cells nbdev-test runs, but for the two that keep the transcript: (id, source)"
    from nbdev.test import nb_test_cells
    return [(c.id, c.source) for c in nb_test_cells(path) if '_keep_transcript' not in c.source]


def transcript_path() -> Path:
    "Where a test run of the tour leaves its transcript: beside the run's feature cache"
    return Path(os.environ['RECYCLE_CLASSIFIER_CACHE_DIR']).parent/'tour-transcript.json'


def current_transcript() -> dict | None:
    "The transcript of a run of the notebook as it is now, by cell source hash, if there is one"
    p = transcript_path()
    if not p.is_file(): return None
    by_sha = {c['source_sha256']: c for c in json.loads(p.read_text())['cells']}
    return by_sha if all(_sha(src) in by_sha for _, src in executed_cells()) else None


@pytest.fixture(scope='module')
def transcript():
    "What the tour printed and showed in this test run: nbdev-test's run of it, or one started here"
    ran = current_transcript()
    if ran is None:
        env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
        r = subprocess.run([str(BIN/'nbdev-test'), str(TOUR)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
        ran = current_transcript()
        assert ran is not None, f'the tour ran but left no transcript at {transcript_path()}'
    return ran


# ---------------------------------------------------------------- tests

def test_the_tour_keeps_its_outputs_and_pictures():
    kept = kept_outputs()
    assert TOUR.stat().st_size < MAX_BYTES, f'{TOUR.name} is {TOUR.stat().st_size/1e6:.1f} MB; size its pictures down'
    assert sum(c['pictures'] for c in kept.values()) >= MIN_PICTURES
    cells = executed_cells()
    silent = [i for i, _ in cells if not kept[i]['outputs']]
    assert len(silent) <= 2, f'cells saved without outputs: {silent} (run it with nbdev-test {TOUR} --save)'
    commands = re.findall(r'^\$ recycle-classifier (\w+)', ''.join(c['stdout'] for c in kept.values()), re.M)
    assert {'scrape', 'train', 'clean', 'predict', 'extend', 'adapt', 'app', 'export'} <= set(commands)


def test_the_tour_prints_what_it_kept(transcript):
    kept, problems = kept_outputs(), []
    for cid, src in executed_cells():
        ran, k = transcript[_sha(src)], kept[cid]
        for name in ('stdout', 'stderr', 'result'):
            problems += [f'cell {cid} {name}: {d}' for d in differences(k[name], ran.get(name, ''))]
        if ran['pictures'] != k['pictures']: problems.append(f"cell {cid}: {ran['pictures']} pictures, {k['pictures']} kept")
    assert not problems, 'the tour no longer shows what nbs/tour.ipynb keeps (re-run it with nbdev-test --save if the change is right):\n' + '\n'.join(problems[:40])
    assert sum(c['pictures'] for c in transcript.values()) >= MIN_PICTURES


def test_the_comparison_fails_when_a_step_changes():
    kept = kept_outputs()
    train = next(k['stdout'] for k in kept.values() if '$ recycle-classifier train' in k['stdout'])
    assert differences(train, train) == []
    acc = re.search(r'validation accuracy: ([\d.]+)%', train)
    slower = re.sub(r'in ([\d.]+) s', lambda m: f'in {float(m[1]) * 3 + 7:.1f} s', train)
    assert slower != train and differences(train, slower) == []                         # a timing is no change
    one_photo = train.replace(acc[0], f'validation accuracy: {float(acc[1]) - 2:.1f}%')
    assert differences(train, one_photo) == []                                          # one photo of 50 is not
    worse = train.replace(acc[0], f'validation accuracy: {float(acc[1]) - 30:.1f}%')
    assert differences(train, worse)                                                    # 30 points is
    assert differences(train, train.replace('glass', 'jars'))                           # and so is other text
    assert differences(train, '\n'.join(train.splitlines()[:-1]))                       # or a line less
