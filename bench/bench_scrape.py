"""Benchmark the scrape stage against bing-image-downloader's own sequential `downloader.download`.

Two stand-ins of image search (`recycle_classifier.testing.LocalImageSearch`, 127.0.0.1), side by side in one
run: both serve two classes of 50 distinct good photos each (the package's TrashNet sample, Thung & Yang 2017,
MIT license) over 8 hosts, every image answer taking 0.3 s, with one of each kind of bad answer per class
(`hostile_results`: 404, HTML page, HTML claiming to be a JPEG, truncated JPEG, empty file, thumbnail, exact and
near copy, redirect to a photo already found, decompression bomb, a photo offered for both classes). The
*hostile* stand-in adds, per class, a server that never answers and one that answers 500 (and a 503 once); the
*calm* one leaves those out. Both tools get `--timeout 3 --retries 1`. Rounds alternate tool and stand-in.

Photos/s counts the distinct good photos kept. Then a re-run of a finished scrape (hostile stand-in): its exit
status and how many photos it downloaded again. Prints a table of medians and appends one JSON line to
bench/results/scrape.jsonl.

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_scrape.py [--good 50] [--rounds 3]
"""
import argparse, contextlib, hashlib, io, json, os, platform, statistics, tempfile, time
from datetime import datetime, timezone
from pathlib import Path
from bing_image_downloader import downloader
from recycle_classifier.base.core import SAMPLE_DIR
from recycle_classifier.base.layout import image_files
from recycle_classifier.scrape.search import bing_endpoint
from recycle_classifier.scrape.config import ScrapeOptions
from recycle_classifier.scrape.run import scrape
from recycle_classifier.scrape.report import class_line
from recycle_classifier.testing import LocalImageSearch, hostile_results

RESULTS = Path(__file__).parent/'results'/'scrape.jsonl'
QUERIES = ('glass and cans', 'paper and card')
TIMEOUT, RETRIES = 3, 1
WORKERS = None  # None: the stage's default (ScrapeOptions.workers)

def build_site(photos: list[bytes], good: int, hostile: bool, hosts: int, latency: float, seed: int):
    "The stand-in: two classes of `good` photos and every kind of trouble; (site, {query: good photos})"
    site = LocalImageSearch(page_size=1000, latency=(latency, latency), hosts=hosts, seed=seed).start()
    a, b = photos[:good + 1], photos[good + 1:2 * good + 2]
    urls, keep_a = hostile_results(site, QUERIES[0], a[:good], a[good], hang=hostile, errors=hostile, seed=seed)
    shared = next(u for u in urls if u.endswith('/0.jpg'))
    _, keep_b = hostile_results(site, QUERIES[1], b[:good], b[good], hang=hostile, errors=hostile, shared=shared, seed=seed + 1)
    return site, {QUERIES[0]: keep_a, QUERIES[1]: keep_b}

def sha(data: bytes) -> str: return hashlib.sha256(data).hexdigest()

def audit(out: Path, keep: dict) -> dict:
    "Distinct good photos kept (by content, or by our content-hash name), and files that are not one of them"
    good = {sha(d) for ds in keep.values() for d in ds}
    files = [f for f in out.rglob('*') if f.is_file() and not f.name.startswith('.') and f.suffix != '.jsonl']
    found = {sha(f.read_bytes()) for f in files} & good
    found |= {h for h in good for f in files if f.name == h[:16] + '.jpg'}
    return {'good_kept': len(found), 'bad_kept': len(files) - len(found)}

def run_baseline(site, keep: dict, out: Path) -> float:
    "bing-image-downloader's `download` (one photo after another), each class searched on the stand-in; seconds"
    t0 = time.perf_counter()
    for q in QUERIES:
        with bing_endpoint(site.search_url, timeout=TIMEOUT), contextlib.redirect_stdout(io.StringIO()):
            downloader.download(q, limit=len(site.results[q]), output_dir=str(out), adult_filter_off=False,
                                timeout=TIMEOUT, verbose=False)
    return time.perf_counter() - t0

def run_stage(site, keep: dict, out: Path) -> float:
    "This project's `scrape` (one pool, verified, de-duplicated), both classes in one run; seconds"
    t0 = time.perf_counter()
    scrape({q: q for q in QUERIES}, out, 100, search_url=site.search_url, timeout=TIMEOUT, retries=RETRIES, progress=False,
           **({'workers': WORKERS} if WORKERS else {}))
    return time.perf_counter() - t0

def rerun_check(photos, a) -> dict:
    "Scrape the hostile stand-in, then run the same again: its problems, and the good photos downloaded again"
    site, keep = build_site(photos, a.good, True, a.hosts, a.latency, seed=99)
    with tempfile.TemporaryDirectory() as tmp:
        run_stage(site, keep, Path(tmp))
        hits = site.hits()
        t0 = time.perf_counter()
        rep = scrape({q: q for q in QUERIES}, Path(tmp), 100, search_url=site.search_url, timeout=TIMEOUT,
                     retries=RETRIES, progress=False)
        secs = time.perf_counter() - t0
        again = site.hits() - hits
    site.stop()
    good_route = lambda name: name.split('/')[-1].split('.')[0].isdigit() and int(name.split('/')[-1].split('.')[0]) < a.good
    photos_again = sum(n for name, n in again.items() if good_route(name))
    return {'exit_code': 1 if rep.problems() else 0, 'photos_downloaded_again': photos_again,
            'urls_tried_again': sum(again.values()), 'seconds': round(secs, 2), 'lines': [class_line(c) for c in rep.classes]}

def median_row(runs: list[dict]) -> dict:
    med = lambda k: statistics.median(r[k] for r in runs)
    return {'seconds': round(med('seconds'), 3), 'photos_per_s': round(med('photos_per_s'), 2),
            'good_kept': med('good_kept'), 'bad_kept': med('bad_kept'), 'rounds': [round(r['seconds'], 2) for r in runs]}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--good', type=int, default=50, help='good photos per class (default 50)')
    ap.add_argument('--hosts', type=int, default=8)
    ap.add_argument('--latency', type=float, default=0.3, help='seconds each image answer takes (default 0.3)')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--workers', type=int, default=None, help="scrape's --workers (default: the stage's default)")
    a = ap.parse_args()
    global WORKERS
    WORKERS = a.workers
    photos = [f.read_bytes() for f in image_files(SAMPLE_DIR)]
    runs = {(s, t): [] for s in ('hostile', 'calm') for t in ('bing-image-downloader', 'scrape')}
    for rnd in range(a.rounds):
        for (stand_in, tool), rows in runs.items():
            site, keep = build_site(photos, a.good, stand_in == 'hostile', a.hosts, a.latency, seed=rnd)
            with tempfile.TemporaryDirectory() as tmp:
                secs = (run_stage if tool == 'scrape' else run_baseline)(site, keep, Path(tmp))
                q = audit(Path(tmp), keep)
            site.stop()
            rows.append({'seconds': secs, 'photos_per_s': q['good_kept'] / secs, **q})
            print(f'round {rnd + 1} {stand_in:8s} {tool:22s} {secs:6.2f} s  {q["good_kept"]} good kept, {q["bad_kept"]} bad', flush=True)
    res = {f'{s}/{t}': median_row(r) for (s, t), r in runs.items()}
    ratios = {s: round(res[f'{s}/scrape']['photos_per_s'] / res[f'{s}/bing-image-downloader']['photos_per_s'], 2)
              for s in ('hostile', 'calm')}
    rerun = rerun_check(photos, a)
    print(f'\n2 classes x {a.good} good photos, {a.hosts} hosts, {a.latency:g} s per image, --timeout {TIMEOUT} '
          f'--retries {RETRIES}; medians of {a.rounds} rounds')
    print(f'{"stand-in / tool":34s} {"seconds":>8s} {"photos/s":>9s} {"good kept":>10s} {"bad kept":>9s}')
    for k, r in res.items():
        print(f'{k:34s} {r["seconds"]:8.2f} {r["photos_per_s"]:9.2f} {r["good_kept"]:10.0f} {r["bad_kept"]:9.0f}')
    print(f'photos/s ratio (scrape / bing-image-downloader): hostile {ratios["hostile"]}x (target >= 10x), '
          f'calm {ratios["calm"]}x (target >= 15x)')
    print(f're-run of a finished scrape: exit {rerun["exit_code"]}, {rerun["photos_downloaded_again"]} photos downloaded '
          f'again, {rerun["urls_tried_again"]} failed URLs tried again, {rerun["seconds"]} s')
    for line in rerun['lines']: print('   ', line)
    rec = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'bench': 'scrape',
           'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(), 'load_avg': os.getloadavg()[0]},
           'setup': {'classes': 2, 'good_per_class': a.good, 'hosts': a.hosts, 'latency_s': a.latency,
                     'timeout': TIMEOUT, 'retries': RETRIES, 'rounds': a.rounds,
                     'workers': a.workers or ScrapeOptions.workers, 'per_host': ScrapeOptions.per_host},
           'results': res, 'ratio_photos_per_s': ratios, 'rerun': rerun}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, 'a') as f: f.write(json.dumps(rec) + '\n')
    print(f'appended to {RESULTS}')

if __name__ == '__main__': main()
