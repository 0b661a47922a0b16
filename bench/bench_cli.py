"""Benchmark the command line's start-up: `recycle-classifier --help` and `recycle-classifier --version`, each a
fresh process, RUNS times; prints medians and whether torch was imported, and appends one JSON line to
bench/results/cli.jsonl.

    python bench/bench_cli.py [--runs 15]
"""
import argparse, json, platform, statistics, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'/'cli.jsonl'
TARGET_S = 1.0


def time_command(args, runs: int) -> list[float]:
    "Wall seconds of `recycle-classifier ARGS` in a fresh process, `runs` times"
    exe = Path(sys.executable).with_name('recycle-classifier')
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, *args], capture_output=True, check=True)
        out.append(time.perf_counter() - start)
    return out


def imports_torch() -> bool:
    "Whether `--help` imports torch"
    code = 'import sys\nfrom recycle_classifier.cli import main\ntry: main(["--help"])\nexcept SystemExit: pass\nprint("torch" in sys.modules)'
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip().endswith('True')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=15)
    a = ap.parse_args()
    rec = dict(bench='cli', when=datetime.now(timezone.utc).isoformat(timespec='seconds'), python=platform.python_version(),
               runs=a.runs, help_imports_torch=imports_torch())
    for name, args in [('help', ['--help']), ('version', ['--version']), ('predict_help', ['predict', '--help'])]:
        times = time_command(args, a.runs)
        rec[f'{name}_median_s'] = round(statistics.median(times), 3)
        rec[f'{name}_max_s'] = round(max(times), 3)
        print(f'recycle-classifier {" ".join(args):<16} median {statistics.median(times):.3f} s  max {max(times):.3f} s')
    print(f'--help imports torch: {rec["help_imports_torch"]}; target: --help <= {TARGET_S} s')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, 'a') as f: f.write(json.dumps(rec) + '\n')


if __name__ == '__main__': main()
