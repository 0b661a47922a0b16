"""Ways of reading frozen embeddings for TrashNet 6-way 5-shot (300 episodes each; 'dev' = episodes drawn from the
train split only, 'all' = train+valid): single layers and their texture statistics, concatenations, ImageNet logits
and probabilities, centring, logistic regression on the support, transductive soft k-means, a centre crop, and
EfficientNet-Lite0 + MobileNetV2 concatenated. Needs `fs_layers.py efficientnet_lite0@320 mobilenet_v2@320` and
`fs_views.py efficientnet_lite0@320:0.75` run first (they cache under /tmp/fs)."""
import pathlib, sys  # noqa
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch
from fs_layers_eval import *
from recycle_classifier.backbones import efficientnet_lite
L, y, n = load('/tmp/fs/layers_efficientnet_lite0_320.npz')
dev = np.arange(1768); test = np.arange(1768, n)
specs = {'head m': [('L17', 'm')], 'L16 m': [('L16', 'm')], 'L15 m': [('L15', 'm')], 'L12 m': [('L12', 'm')], 'L9 m': [('L9', 'm')],
 'L6 m': [('L6', 'm')], 'head s': [('L17', 's')], 'L16 s': [('L16', 's')], 'L12 s': [('L12', 's')], 'L9 s': [('L9','s')], 'L6 s': [('L6','s')],
 'head m+L16 m': [('L17','m'),('L16','m')], 'head+L16+L12 m': [('L17','m'),('L16','m'),('L12','m')],
 'head m+L16 ms': [('L17','m'),('L16','ms')], 'head ms': [('L17','ms')], 'head m + L16,12,9 s': [('L17','m'),('L16','s'),('L12','s'),('L9','s')]}
for name, spec in specs.items():
    X = feature(L, n, spec)
    print(f'{name:28s} dev {evaluate(X, y, dev, proto, E=300)[0]:.1f}  all {evaluate(X, y, np.arange(n), proto, E=300)[0]:.1f}', flush=True)
# ---- classifiers and transductive inference
X = feature(L, n, [('L17', 'm')]); Xf = feature(L, n, [('L17', 'm')], flip=True)
def softkmeans(X, S, Q, ys, iters=10, T=10, center=True):
    s, q = X[S], X[Q]
    if center: mu = np.concatenate([s, q]).mean(0); s, q = norm(s - mu), norm(q - mu)
    P = norm(np.stack([s[ys == k].mean(0) for k in range(ys.max()+1)]))
    for _ in range(iters):
        logit = T * q @ P.T; w = np.exp(logit - logit.max(1, keepdims=True)); w /= w.sum(1, keepdims=True)
        P = norm(np.stack([(s[ys == k].sum(0) + (w[:, k:k+1] * q).sum(0)) / ((ys == k).sum() + w[:, k].sum()) for k in range(P.shape[0])]))
    return (q @ P.T).argmax(1)
for name, clf in {'proto': proto, 'proto center': lambda *a: proto(*a, center=True),
                  'LR C=1': lambda *a: logreg(*a, C=1), 'LR C=10': lambda *a: logreg(*a, C=10), 'LR C=100': lambda *a: logreg(*a, C=100),
                  'softkm T10 (transductive)': softkmeans, 'softkm T20': lambda *a: softkmeans(*a, T=20), 'softkm T5': lambda *a: softkmeans(*a, T=5)}.items():
    print(f'{name:28s} dev {evaluate(X, y, dev, clf, E=300)[0]:.1f}', flush=True)
# ---- ImageNet logits and probabilities as the embedding
m = efficientnet_lite(0); fc = m[-1]; print(fc)
H = L['L17'][:n, :1280]
with torch.no_grad(): Z = fc(torch.from_numpy(H)).numpy()
np.save('/tmp/fs/lite0_logits.npy', Z)
P = torch.softmax(torch.from_numpy(Z), 1).numpy()
for name, X in {'logits': norm(Z), 'logits centered': norm(Z - Z.mean(1, keepdims=True)), 'logprob': norm(np.log(P + 1e-12)),
                'prob': norm(P), 'sqrt prob': norm(np.sqrt(P)), 'prob^.25': norm(P ** .25), 'feat+sqrtprob': norm(np.concatenate([norm(H), norm(np.sqrt(P))], 1))}.items():
    print(f'{name:20s} proto dev {evaluate(X, y, dev, proto, E=300)[0]:.1f}  center {evaluate(X, y, dev, lambda *a: proto(*a, center=True), E=300)[0]:.1f}', flush=True)
print('top ImageNet classes per TrashNet class:')
for c in sorted(set(y)):
    top = np.argsort(-P[y == c].mean(0))[:6]; print(c, top.tolist(), np.round(P[y == c].mean(0)[top], 3).tolist())
# ---- two backbones, flips
A, y, n = load('/tmp/fs/layers_efficientnet_lite0_320.npz'); B, _, _ = load('/tmp/fs/layers_mobilenet_v2_320.npz')
print(sorted(B, key=lambda k: int(k[1:]))[-3:], B['L18'].shape)
XA = feature(A, n, [('L17', 'm')]); XB = feature(B, n, [('L18', 'm')])
XAf = feature(A, n, [('L17', 'm')], True); XBf = feature(B, n, [('L18', 'm')], True)
for name, X in {'mnv2@320': XB, 'lite0@320': XA, 'concat': norm(np.concatenate([XA, XB], 1)),
                'lite0 + flip avg': norm(XA + XAf), 'concat + flip avg': norm(np.concatenate([norm(XA + XAf), norm(XB + XBf)], 1))}.items():
    print(f'{name:20s} proto dev {evaluate(X, y, dev, proto, E=300)[0]:.1f}  LR10 {evaluate(X, y, dev, lambda *a: logreg(*a, C=10), E=300)[0]:.1f}', flush=True)
# ---- a centre crop (75%) against the whole photo
C = norm(np.load('/tmp/fs/view_efficientnet_lite0_320_0.75.npy'))
for name, X in {'full': XA, 'crop .75': C, 'full+crop': norm(XA + C)}.items():
    print(f'{name:20s} proto dev {evaluate(X, y, dev, proto, E=300)[0]:.1f}', flush=True)
