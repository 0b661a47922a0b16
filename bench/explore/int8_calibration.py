"""How `quantize_onnx` calibrates (issue #14): min-max against percentile ranges, on real models trained on TrashNet
(Thung & Yang 2016, MIT license). For each model (.pkl from `recycle-classifier train`) it exports the one-view ONNX
file, quantises it both ways (the same 48 calibration photos from the embedded sample's train split), and compares
each int8 file with the fp32 one on TrashNet train (a split the heads were fitted on: agreement and probability change
need no held-out labels) and valid (accuracy; reported). Rows go to bench/results/int8-calibration.jsonl.

    flock /tmp/rc-cpu.lock .venv/bin/python bench/explore/int8_calibration.py DEFAULT.pkl SINGLE.pkl
"""
import json, sys, tempfile, warnings
from datetime import datetime, timezone
from pathlib import Path
warnings.filterwarnings('ignore')
from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationMethod
from onnxruntime.quantization.shape_inference import quant_pre_process
from recycle_classifier.core import SAMPLE_DIR
from recycle_classifier.layout import image_files
from recycle_classifier.learner import load_learner
from recycle_classifier.onnx_export import export_onnx, compare, labelled_photos, _Calibration
from recycle_classifier.onnx_predict import OnnxPredictor

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'
METHODS = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile}


def main(models):
    cal = image_files(SAMPLE_DIR/'train')
    cal = cal[::max(1, len(cal) // 48)][:48]
    splits = {s: labelled_photos(DATA/s) for s in ('train', 'valid')}
    with tempfile.TemporaryDirectory() as tmp, open(ROOT/'bench'/'results'/'int8-calibration.jsonl', 'a') as out:
        for pkl in map(Path, models):
            learn = load_learner(pkl)
            learn.model.views = ('orig',)
            fp32_path = export_onnx(learn, Path(tmp)/f'{pkl.stem}.onnx')
            fp32 = OnnxPredictor(fp32_path, runtime='onnxruntime')
            pre = Path(tmp)/f'{pkl.stem}.pre.onnx'
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            for name, method in METHODS.items():
                q = Path(tmp)/f'{pkl.stem}.{name}.onnx'
                quantize_static(str(pre), str(q), _Calibration(fp32, cal), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method)
                row = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'model': pkl.name,
                       'size': fp32.pre['size'], 'calibration': name, 'calibration_photos': len(cal),
                       **{s: compare(fp32, OnnxPredictor(q), lab) for s, lab in splits.items()}}
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + '\n')


if __name__ == '__main__': main(sys.argv[1:])
