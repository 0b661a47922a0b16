"""Benchmark what a user meets with the model files `train` writes (issue 24), each as a fresh CLI process:

  `predict MODEL.pkl DATA/valid --json` (which runs the .pkl's verified .onnx twin) against
  `predict MODEL.onnx DATA/valid --json` (target: at most 1.3x), and, with --fastai, the .pkl through fastai
  (the twin hidden), as before the twin was used;
  `export MODEL.pkl --quantize` (int8 calibration on 48 photos): wall time and peak resident memory of the
  process (target: at most 4 GB; it was killed past 22 GB on the default two-body model).

MODEL is a default model (`recycle-classifier train DATA --out MODEL.pkl`), copied into a temporary folder so
that its files are not changed. Prints the figures and appends one record to bench/results/model_files.jsonl.
Run it under the CPU lock:

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_model_files.py MODEL.pkl --data ../shared/datasets/trashnet
"""
import argparse, json, os, platform, resource, shutil, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'
CLI = [sys.executable, '-m', 'recycle_classifier.cli']


def timed(args, cwd) -> tuple[float, float, subprocess.CompletedProcess]:
    "Wall seconds and peak RSS (GB) of one CLI run in a fresh process"
    code = ('import resource, subprocess, sys, time; t = time.perf_counter(); '
            'r = subprocess.run(sys.argv[1:], capture_output=True, text=True); '
            'print(r.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); '
            'sys.stderr.write(r.stderr[-3000:]); sys.stdout.write(r.stdout)')
    r = subprocess.run([sys.executable, '-c', code, *CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    head, _, out = r.stdout.partition('\n')
    rc, secs, kb = head.split()
    if int(rc) not in (0, 1): raise SystemExit(f'{" ".join(map(str, args))} failed ({rc}): {r.stderr}')
    return round(float(secs), 2), round(int(kb) / 2**20, 2), subprocess.CompletedProcess(args, int(rc), out, r.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model', type=Path, help='a default model (.pkl) with its .onnx and .json beside it')
    ap.add_argument('--data', type=Path, default=ROOT.parent/'shared'/'datasets'/'trashnet')
    ap.add_argument('--fastai', action='store_true', help='also time the .pkl through fastai (minutes)')
    ap.add_argument('--no-quantize', action='store_true')
    a = ap.parse_args()
    photos = a.data/'valid' if (a.data/'valid').is_dir() else a.data
    rec = dict(when=datetime.now(timezone.utc).isoformat(timespec='seconds'), machine=platform.processor() or platform.machine(),
               cores=len(os.sched_getaffinity(0)), model=a.model.name, data=str(photos))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for sfx in ('.pkl', '.onnx', '.json'): shutil.copy(a.model.with_suffix(sfx), d/f'm{sfx}')
        n = None
        for name, model in (('onnx', 'm.onnx'), ('pkl', 'm.pkl')):
            secs, gb, r = timed(['predict', model, photos, '--json'], d)
            n = len(r.stdout.splitlines())
            assert 'note:' not in r.stderr or name == 'onnx', r.stderr   # the .pkl ran its twin
            rec[f'predict_{name}_s'], rec[f'predict_{name}_peak_gb'] = secs, gb
            print(f'predict {model}: {n} photos in {secs} s, peak {gb} GB', flush=True)
        rec.update(photos=n, pkl_over_onnx=round(rec['predict_pkl_s'] / rec['predict_onnx_s'], 2))
        print(f"predict .pkl / .onnx: {rec['pkl_over_onnx']}x (target at most 1.3x)")
        if a.fastai:
            (d/'m.onnx').rename(d/'hidden.onnx')
            secs, gb, _ = timed(['predict', 'm.pkl', photos, '--json'], d)
            (d/'hidden.onnx').rename(d/'m.onnx')
            rec.update(predict_fastai_s=secs, predict_fastai_peak_gb=gb)
            print(f'predict m.pkl through fastai (no twin): {secs} s, peak {gb} GB')
        if not a.no_quantize:
            secs, gb, r = timed(['export', 'm.pkl', '--quantize'], d)
            rec.update(quantize_s=secs, quantize_peak_gb=gb, quantize_summary=r.stdout.strip().splitlines()[-2])
            print(f'export --quantize: {secs} s, peak {gb} GB (target at most 4 GB)\n  {rec["quantize_summary"]}')
    with open(RESULTS/'model_files.jsonl', 'a') as f: f.write(json.dumps(rec) + '\n')


if __name__ == '__main__': main()
