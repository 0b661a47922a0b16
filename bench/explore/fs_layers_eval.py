"6-way 5-shot episodes over cached per-stage features: which layers, pooling and classifiers help few-shot on TrashNet."
import numpy as np
from sklearn.linear_model import LogisticRegression
from recycle_classifier.fewshot import episode_accuracies, summarise
def norm(a): return a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-8)
def load(path):
    d = np.load(path); n = int(d['n']); y = d['y']
    L = {k: d[k].astype(np.float32) for k in d.files if k.startswith('L')}
    return L, y, n
def feature(L, n, spec, flip=False):
    "spec: list of (layer, 'm'|'s'|'ms') -> concatenation of separately L2-normalised blocks"
    parts = []
    for layer, kind in spec:
        a = L[layer][n:] if flip else L[layer][:n]; c = a.shape[1] // 2
        sel = {'m': a[:, :c], 's': a[:, c:], 'ms': a}[kind]
        parts.append(norm(np.sqrt(np.maximum(sel, 0)) if kind == 's' else sel))
    return norm(np.concatenate(parts, 1))
def proto(X, S, Q, ys, center=False):
    s, qx = X[S], X[Q]
    if center: mu = s.mean(0); s, qx = norm(s - mu), norm(qx - mu)
    P = norm(np.stack([s[ys == k].mean(0) for k in range(ys.max() + 1)]))
    return (qx @ P.T).argmax(1)
def logreg(X, S, Q, ys, C=10):
    return LogisticRegression(C=C, max_iter=500).fit(X[S], ys).predict(X[Q])
def evaluate(X, y, pool, clf, ways=6, shots=5, q=15, E=600, seed=0):
    "Mean accuracy and 95% CI of `clf(X, support, query, support_labels)` over the package's episodes, drawn from `pool`"
    pool = np.asarray(pool); labels = np.unique(y, return_inverse=True)[1][pool]
    def classify(s, qs): return clf(X, pool[s.reshape(-1)], pool[qs.reshape(-1)], np.repeat(np.arange(ways), shots))
    r = summarise(episode_accuracies(labels, classify, ways, shots, q, E, seed))
    return r['acc'], r['ci95']
