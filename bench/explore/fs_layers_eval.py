"6-way 5-shot episodes over cached per-stage features: which layers, pooling and classifiers help few-shot on TrashNet."
import sys, numpy as np, itertools
from sklearn.linear_model import LogisticRegression
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
def episodes(y, idx_pool, ways=6, shots=5, q=15, E=600, seed=0):
    cls = sorted(set(y)); by = {c: np.intersect1d(np.where(y == c)[0], idx_pool) for c in cls}
    rng = np.random.default_rng(seed)
    for e in range(E):
        cs = rng.choice(cls, ways, replace=False); S, Q = [], []
        for c in cs:
            idx = rng.choice(by[c], shots + q, replace=False); S.append(idx[:shots]); Q.append(idx[shots:])
        yield np.concatenate(S), np.concatenate(Q), np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), q)
def proto(X, S, Q, ys, center=False):
    s, qx = X[S], X[Q]
    if center: mu = s.mean(0); s, qx = norm(s - mu), norm(qx - mu)
    P = norm(np.stack([s[ys == k].mean(0) for k in range(ys.max() + 1)]))
    return (qx @ P.T).argmax(1)
def logreg(X, S, Q, ys, C=10):
    return LogisticRegression(C=C, max_iter=500).fit(X[S], ys).predict(X[Q])
def evaluate(X, y, pool, clf, **kw):
    accs = [(clf(X, S, Q, ys) == yq).mean() for S, Q, ys, yq in episodes(y, pool, **kw)]
    return np.mean(accs) * 100, 1.96 * np.std(accs) / np.sqrt(len(accs)) * 100
