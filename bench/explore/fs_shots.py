"TrashNet 6-way accuracy against photos per class (1 to 40): prototypes vs logistic regression on the same frozen embeddings."
import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
import sys, json, time, numpy as np
sys.path.insert(0, str(ROOT/'bench'/'explore'))
from fs_layers_eval import load, feature, evaluate, proto, logreg
# embeddings cached by `fs_layers.py efficientnet_lite0@320 mobilenet_v2@320` (last entry: the body's output)
for path in sys.argv[1:] or ['/tmp/fs/layers_efficientnet_lite0_320.npz']:
    L, y, n = load(path); last = max(L, key=lambda k: int(k[1:]))
    X = feature(L, n, [(last, 'm')]); name = pathlib.Path(path).stem.removeprefix('layers_')
    for shots in (1, 5, 10, 20, 40):
        for clf_name, clf in [('prototypes', proto), ('logistic regression C=10', lambda *a: logreg(*a, C=10))]:
            if shots == 1 and clf_name != 'prototypes': continue
            acc, ci = evaluate(X, y, np.arange(n), clf, ways=6, shots=shots, E=300)
            row = dict(date=time.strftime('%Y-%m-%d'), script='fs_shots.py', data='TrashNet train+valid (2,096)', embedding=name,
                       ways=6, shots=shots, queries=15, episodes=300, classifier=clf_name, acc=round(acc, 1), ci95=round(ci, 1))
            print(row, flush=True)
            with open(ROOT/'bench'/'results'/'explore.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
