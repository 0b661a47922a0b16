"""How `quantize_onnx` calibrates (issue #14): min-max against percentile ranges, on real models trained on TrashNet
(Thung & Yang 2016, MIT license). For each model (.pkl from `recycle-classifier train`) it exports the one-view ONNX
file, quantises it both ways with `quantize_onnx` (its 48 calibration photos from the embedded sample's train split), and compares
each int8 file with the fp32 one on TrashNet train (a split the heads were fitted on: agreement and probability change
need no held-out labels) and valid (accuracy; reported). Rows go to bench/results/int8-calibration.jsonl.

    flock /tmp/rc-cpu.lock .venv/bin/python bench/explore/int8_calibration.py DEFAULT.pkl SINGLE.pkl
"""
import json, sys, tempfile, warnings
from datetime import datetime, timezone
from pathlib import Path
warnings.filterwarnings('ignore')
from recycle_classifier.formats.learner import load_learner
from recycle_classifier.formats.onnx_export import export_onnx, quantize_onnx, compare, labelled_photos
from recycle_classifier.formats.onnx_predict import OnnxPredictor

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'


def main(models):
    train = labelled_photos(DATA/'train')
    with tempfile.TemporaryDirectory() as tmp, open(ROOT/'bench'/'results'/'int8-calibration.jsonl', 'a') as out:
        for pkl in map(Path, models):
            learn = load_learner(pkl)
            learn.model.views = ('orig',)
            fp32_path = export_onnx(learn, Path(tmp)/f'{pkl.stem}.onnx')
            fp32 = OnnxPredictor(fp32_path, runtime='onnxruntime')
            for name in ('minmax', 'percentile'):
                q = OnnxPredictor(quantize_onnx(fp32_path, Path(tmp)/f'{pkl.stem}.{name}.onnx', check_data=DATA, calibration_method=name))
                row = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'model': pkl.name, 'size': fp32.pre['size'],
                       'calibration': name, 'calibration_photos': q.meta['quantization']['calibration_photos'],
                       'train': compare(fp32, q, train), 'valid': q.meta['quantization']}
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + '\n')


if __name__ == '__main__': main(sys.argv[1:])
