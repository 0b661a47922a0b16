import pathlib  # noqa
ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent/'shared'/'datasets'/'trashnet'   # TrashNet (Thung & Yang 2016, MIT license)
import sys, numpy as np
from sklearn.linear_model import LogisticRegression
def norm(a): return a / np.linalg.norm(a, axis=-1, keepdims=True)
def run(path, ways=6, shots=5, q=15, E=600, seed=0):
    d = np.load(path); X, Xf, y = d['X'], d['Xf'], d['y']
    cls = sorted(set(y)); by = {c: np.where(y == c)[0] for c in cls}
    rng = np.random.default_rng(seed); res = {}
    for e in range(E):
        cs = rng.choice(cls, ways, replace=False); S, Q, ys, yq = [], [], [], []
        for i, c in enumerate(cs):
            idx = rng.choice(by[c], shots + q, replace=False); S += list(idx[:shots]); Q += list(idx[shots:]); ys += [i]*shots; yq += [i]*q
        S, Q, ys, yq = np.array(S), np.array(Q), np.array(ys), np.array(yq)
        def proto(sx, qx, center=None, aug=None):
            if center is not None: sx, qx = sx - center, qx - center
            sx, qx = norm(sx), norm(qx)
            P = np.stack([sx[ys_ == k].mean(0) for k in range(ways)]) if aug is None else None
            return P
        variants = {}
        # plain: normalize, mean, cosine
        for name, (s, q_, sy) in {
            'plain': (norm(X[S]), norm(X[Q]), ys),
            'flip': (norm(np.concatenate([X[S], Xf[S]])), norm(X[Q]), np.concatenate([ys, ys])),
        }.items():
            P = np.stack([s[sy == k].mean(0) for k in range(ways)])
            variants[name] = (q_ @ norm(P).T).argmax(1)
        # centred on the support mean (CL2N), with and without flip
        for name, s_raw, sy in [('cl2n', X[S], ys), ('cl2n_flip', np.concatenate([X[S], Xf[S]]), np.concatenate([ys, ys]))]:
            m = s_raw.mean(0)
            s = norm(norm(s_raw) - norm(s_raw).mean(0)); qq = norm(norm(X[Q]) - norm(s_raw).mean(0))
            P = np.stack([s[sy == k].mean(0) for k in range(ways)])
            variants[name] = (qq @ norm(P).T).argmax(1)
            # also test with query flip averaging
            qf = norm(norm((norm(X[Q]) + norm(Xf[Q]))/2) - norm(s_raw).mean(0))
            variants[name + '_qflip'] = (qf @ norm(P).T).argmax(1)
        # power transform (sqrt) then cl2n
        s_raw = np.sqrt(np.maximum(np.concatenate([X[S], Xf[S]]), 0)); sy = np.concatenate([ys, ys])
        s0 = norm(s_raw); mu = s0.mean(0); s = norm(s0 - mu); qq = norm(norm(np.sqrt(np.maximum(X[Q], 0))) - mu)
        P = np.stack([s[sy == k].mean(0) for k in range(ways)]); variants['pt_cl2n_flip'] = (qq @ norm(P).T).argmax(1)
        for k, v in variants.items(): res.setdefault(k, []).append((v == yq).mean())
    for k, v in res.items(): print(f'{path} {ways}w{shots}s {k}: {np.mean(v)*100:.1f} ± {1.96*np.std(v)/np.sqrt(len(v))*100:.1f}')
for p in sys.argv[1:]: run(p)
