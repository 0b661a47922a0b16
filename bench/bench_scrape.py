"""Benchmark the scrape stage against bing-image-downloader's own sequential `downloader.download`.

Both run side by side, in alternating rounds, on the same URL list: the local stand-in search
(`LocalImageSearch`, 127.0.0.1) answers one query with real photos (the TrashNet sample, Thung & Yang 2017, MIT
license) spread over several hosts (ports), plus bad files: HTML pages, truncated JPEGs, 404s, thumbnails and
exact copies. Every image answer waits 100-300 ms, like a distant server. Each side's output folder is then
checked the same way (decodes, at least 100 px, no exact copy) to compare how many bad files it let through.

Prints a table of medians and appends one JSON line to bench/results/scrape.jsonl.

    nice python bench/bench_scrape.py [--good 60] [--rounds 3]
"""
import argparse, contextlib, hashlib, io, json, os, platform, random, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path
from PIL import Image
from bing_image_downloader import downloader
from recycle_classifier.core import SAMPLE_DIR, check_image, image_files, open_image
from recycle_classifier.scrape import LocalImageSearch, bing_endpoint, scrape

QUERY = 'recycling waste'
RESULTS = Path(__file__).parent/'results'/'scrape.jsonl'

def thumb(data: bytes) -> bytes:
    "A 48 x 64 thumbnail of a photo"
    buf = io.BytesIO(); Image.open(io.BytesIO(data)).resize((48, 64)).save(buf, 'JPEG'); return buf.getvalue()

def build_site(n_good: int, n_bad_each: int, hosts: int, latency, seed: int) -> tuple[LocalImageSearch, dict]:
    "The stand-in with `n_good` photos and `n_bad_each` bad files of each kind, shuffled, on `hosts` hosts"
    photos = [f.read_bytes() for f in image_files(SAMPLE_DIR)]
    if n_good > len(photos) - n_bad_each: sys.exit(f'at most {len(photos) - n_bad_each} good photos in the sample')
    site = LocalImageSearch(page_size=1000, latency=latency, hosts=hosts, seed=seed).start()  # one page: same list for both
    page = b'<!DOCTYPE html><html><body><h1>403 Forbidden</h1>hotlinking not allowed</body></html>'
    routes = [dict(data=d) for d in photos[:n_good]]
    routes += [dict(data=page, content_type='text/html') for _ in range(n_bad_each)]
    routes += [dict(data=photos[n_good + i][:2000]) for i in range(n_bad_each)]      # truncated
    routes += [dict(status=404) for _ in range(n_bad_each)]
    routes += [dict(data=thumb(photos[n_good + i])) for i in range(n_bad_each)]      # too small
    routes += [dict(data=photos[i]) for i in range(n_bad_each)]                      # exact copies
    random.Random(seed).shuffle(routes)
    urls = [site.add(f'{i}.jpg', host=i % hosts, **r) for i, r in enumerate(routes)]
    site.add_results(QUERY, urls)
    return site, {'urls': len(urls), 'good': n_good, 'bad': len(urls) - n_good}

def audit(folder: Path) -> dict:
    "How many files a run kept, and how many of them are bad: undecodable, under 100 px, or exact copies"
    files = [f for f in folder.rglob('*') if f.is_file() and f.suffix.lower() in ('.jpg', '.jpeg', '.png', '.gif')]
    undecodable = [f for f in files if check_image(f)]
    small = [f for f in files if f not in undecodable and min(open_image(f).size) < 100]
    digests = [hashlib.sha256(open_image(f).tobytes()).hexdigest() for f in files if f not in undecodable]
    copies = len(digests) - len(set(digests))
    bad = len(undecodable) + len(small) + copies
    return {'files': len(files), 'bad_kept': bad, 'good_kept': len(files) - bad,
            'undecodable': len(undecodable), 'too_small': len(small), 'copies': copies}

def run_baseline(site, n: int, out: Path) -> float:
    "bing-image-downloader's `download` (sequential), searching the stand-in; seconds"
    t0 = time.perf_counter()
    with bing_endpoint(site.search_url, timeout=10), contextlib.redirect_stdout(io.StringIO()):
        downloader.download(QUERY, limit=n, output_dir=str(out), adult_filter_off=False, timeout=10, verbose=False)
    return time.perf_counter() - t0

def run_stage(site, n: int, out: Path, workers: int, per_host: int) -> float:
    "This project's `scrape` (concurrent, verified, de-duplicated), searching the stand-in; seconds"
    t0 = time.perf_counter()
    scrape({'waste': QUERY}, out, n, search_url=site.search_url, timeout=10, workers=workers, per_host=per_host,
           progress=False)
    return time.perf_counter() - t0

def summarise(runs: list[dict]) -> dict:
    "Medians over rounds"
    med = lambda k: statistics.median(r[k] for r in runs)
    return {'seconds': round(med('seconds'), 3), 'photos_per_s': round(med('photos_per_s'), 2),
            'urls_per_s': round(med('urls_per_s'), 2), 'good_kept': med('good_kept'), 'bad_kept': med('bad_kept'),
            'rounds': [{k: r[k] for k in ('seconds', 'good_kept', 'bad_kept')} for r in runs]}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--good', type=int, default=60, help='good photos in the results (default 60)')
    ap.add_argument('--bad-each', type=int, default=5, help='bad files of each of five kinds (default 5)')
    ap.add_argument('--hosts', type=int, default=8, help='hosts (ports) the images are spread over (default 8)')
    ap.add_argument('--latency', type=float, nargs=2, default=(0.1, 0.3), metavar=('LO', 'HI'),
                    help='seconds each image answer waits, uniform (default 0.1 0.3)')
    ap.add_argument('--rounds', type=int, default=3, help='rounds of each, alternating (default 3)')
    ap.add_argument('--workers', type=int, default=16)
    ap.add_argument('--per-host', type=int, default=4)
    a = ap.parse_args()
    runs = {'bing-image-downloader': [], 'scrape': []}
    for rnd in range(a.rounds):
        for name in runs:
            site, info = build_site(a.good, a.bad_each, a.hosts, tuple(a.latency), seed=rnd)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                secs = (run_baseline(site, info['urls'], out) if name != 'scrape'
                        else run_stage(site, info['urls'], out, a.workers, a.per_host))
                site.stop()
                q = audit(out)
            runs[name].append({'seconds': secs, 'photos_per_s': q['good_kept'] / secs,
                               'urls_per_s': info['urls'] / secs, **q})
            print(f'round {rnd + 1} {name:22s} {secs:6.2f} s  kept {q["good_kept"]} good, {q["bad_kept"]} bad', flush=True)
    res = {k: summarise(v) for k, v in runs.items()}
    base, ours = res['bing-image-downloader'], res['scrape']
    ratio = round(ours['photos_per_s'] / base['photos_per_s'], 2)
    print(f'\n{info["urls"]} URLs ({a.good} good photos, {info["bad"]} bad), {a.hosts} hosts, '
          f'{a.latency[0] * 1000:.0f}-{a.latency[1] * 1000:.0f} ms per image; medians of {a.rounds} rounds')
    print(f'{"":22s} {"seconds":>8s} {"photos/s":>9s} {"URLs/s":>7s} {"good kept":>10s} {"bad kept":>9s}')
    for name, r in res.items():
        print(f'{name:22s} {r["seconds"]:8.2f} {r["photos_per_s"]:9.2f} {r["urls_per_s"]:7.2f} '
              f'{r["good_kept"]:10.0f} {r["bad_kept"]:9.0f}')
    print(f'throughput ratio (scrape / bing-image-downloader): {ratio}x')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rec = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'bench': 'scrape',
           'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(), 'load_avg': os.getloadavg()[0]},
           'setup': {**info, 'hosts': a.hosts, 'latency_s': list(a.latency), 'rounds': a.rounds,
                     'workers': a.workers, 'per_host': a.per_host},
           'results': res, 'ratio_photos_per_s': ratio}
    with open(RESULTS, 'a') as f: f.write(json.dumps(rec) + '\n')
    print(f'appended to {RESULTS}')

if __name__ == '__main__': main()
