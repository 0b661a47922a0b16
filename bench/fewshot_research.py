"""Few-shot research code, measured in bench/bench_fewshot.py and not shipped in the package (issue #12): episodic
fine-tuning of the body's last blocks with the Prototypical Networks loss (Snell et al. 2017), a Siamese network
(Koch et al. 2015) and open-set episodes for the prototype model's "none of these" threshold. On TrashNet none beat
the frozen prototypes (bench/results/fewshot.md), so the package ships only those.

Works on the package's one `Embedder` (recycle_classifier.features.embedder): its body is `emb.net.body`, its preprocessing
`emb.net.prepare(emb.load(images))`. Photos are embedded once up to the last blocks (`frozen_features`), so training
only runs the tail. Fine-tuning changes the body in place: give it a private `Embedder(arch, size)`, never the
shared one `get_embedder` returns."""
from __future__ import annotations
import copy
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from recycle_classifier.base.core import UserError
from recycle_classifier.fewshot import calibrate, sample_episode, summarise
from recycle_classifier.formats.protomodel import prototypes

__all__ = ['body_blocks', 'split_body', 'frozen_features', 'tail_embed', 'open_set_episodes', 'protonet_loss',
           'episodic_finetune', 'SiameseNet', 'train_siamese', 'siamese_classify', 'siamese_embed']

def body_blocks(body: nn.Module) -> list[nn.Module]:
    "The body's top-level blocks, looking through single-child `Sequential` wrappers"
    while isinstance(body, nn.Sequential) and len(body) == 1 and isinstance(body[0], nn.Sequential): body = body[0]
    return list(body)

def split_body(emb, n_train: int) -> tuple[nn.Sequential, nn.Sequential]:
    "The frozen first blocks and the last `n_train` blocks (shared with `emb`, not copies)"
    blocks = body_blocks(emb.net.body)
    if not 0 < n_train < len(blocks): raise UserError(f'can train 1 to {len(blocks)-1} blocks, not {n_train}')
    return nn.Sequential(*blocks[:-n_train]), nn.Sequential(*blocks[-n_train:])

@torch.no_grad()
def frozen_features(emb, frozen: nn.Module, images, bs: int = 32) -> torch.Tensor:
    "The frozen blocks' output for each photo, computed once"
    frozen.eval()
    return torch.cat([frozen(emb.net.prepare(emb.load(images[i:i+bs]))) for i in range(0, len(images), bs)])

def _pool(x):
    "Global average pooling of a feature map"
    return x.mean((2, 3))

@torch.no_grad()
def tail_embed(emb, feats: torch.Tensor, n_train: int, bs: int = 256) -> torch.Tensor:
    "Unit-length embeddings from cached frozen features through the last `n_train` blocks"
    tail = split_body(emb, n_train)[1].eval()
    return torch.cat([F.normalize(_pool(tail(feats[i:i+bs])), dim=1) for i in range(0, len(feats), bs)])


def open_set_episodes(embs: torch.Tensor, labels, ways: int, shots: int, queries: int = 15, episodes: int = 600,
                      seed: int = 0) -> dict:
    "Known-class accuracy and unknown-class rejection (%) of the calibrated threshold over random episodes"
    labels = np.asarray(labels)
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels) if (labels == c).sum() >= shots + queries}
    if len(by_class) < ways + 1: raise UserError(f'open-set episodes need {ways+1} classes with {shots+queries} photos')
    rng, known, rejected = np.random.default_rng(seed), [], []
    for _ in range(episodes):
        s, q = sample_episode(by_class, ways + 1, shots, queries, rng)
        sup = embs[torch.as_tensor(s[:ways].reshape(-1))]
        y = torch.arange(ways).repeat_interleave(shots)
        _, thr = calibrate(sup, y, ways)
        sims = embs[torch.as_tensor(q.reshape(-1))] @ prototypes(sup, y, ways).T
        best, pred = sims.max(1)
        accept = best >= (thr if thr is not None else -1.)
        truth = torch.arange(ways + 1).repeat_interleave(queries)
        k = truth < ways
        known.append(((pred == truth) & accept)[k].float().mean().item() * 100)
        rejected.append((~accept[~k]).float().mean().item() * 100)
    return dict(ways=ways, shots=shots, queries=queries, episodes=episodes,
                known_correct=summarise(known)['acc'], unknown_rejected=summarise(rejected)['acc'])


def protonet_loss(z: torch.Tensor, ways: int, shots: int) -> torch.Tensor:
    "Prototypical Networks loss of episode embeddings ordered (ways, shots+queries)"
    z = z.view(ways, -1, z.shape[-1])
    protos, q = z[:, :shots].mean(1), z[:, shots:].reshape(-1, z.shape[-1])
    y = torch.arange(ways).repeat_interleave(z.shape[1] - shots)
    return F.cross_entropy(-torch.cdist(q, protos) ** 2, y)

def _base_batches(labels, ways, shots, queries, steps, seed):
    "Episode index arrays (ways, shots+queries) from base-class labels"
    labels = np.asarray(labels)
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels) if (labels == c).sum() >= shots + queries}
    if len(by_class) < ways: raise UserError(f'episodic training needs {ways} base classes with {shots+queries} photos each')
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        s, q = sample_episode(by_class, ways, shots, queries, rng)
        yield np.concatenate([s, q], 1)

def episodic_finetune(emb, feats: torch.Tensor, labels, n_train: int = 1, ways: int = 3, shots: int = 5,
                      queries: int = 10, steps: int = 300, lr: float = 1e-3, seed: int = 0, log=None):
    "Fine-tune the last `n_train` blocks of `emb` in place with the Prototypical Networks loss on base classes"
    torch.manual_seed(seed)
    _, head = split_body(emb, n_train)
    params = [p for p in head.parameters()]
    for p in params: p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    head.eval()  # batch-norm statistics stay those of ImageNet: episodes are too small to estimate them
    for step, idx in enumerate(_base_batches(labels, ways, shots, queries, steps, seed)):
        z = _pool(head(feats[torch.as_tensor(idx.reshape(-1))]))
        loss = protonet_loss(z, ways, shots)
        opt.zero_grad(); loss.backward(); opt.step()
        if log and step % 50 == 0: log(f'step {step}: loss {loss.item():.3f}')
    for p in params: p.requires_grad_(False)
    return emb   # its `embed` may run ONNX Runtime on the original weights: embed through `tail_embed`


class SiameseNet(nn.Module):
    "Shared encoder, L1 distance, linear layer (weights kept <= 0 in training) and sigmoid (Koch et al. 2015)"
    def __init__(self, encoder: nn.Module, dim: int):
        super().__init__()
        self.encoder, self.fc = encoder, nn.Linear(dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        "Pooled encoder output"
        return _pool(self.encoder(x))

    def pair_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        "Same-class logit of every pair (a[i], b[j]) of embeddings: shape (len(a), len(b))"
        return self.fc((a[:, None] - b[None]).abs()).squeeze(-1)

def train_siamese(emb, feats: torch.Tensor, labels, n_train: int = 1, steps: int = 300, pairs: int = 64,
                  lr: float = 1e-3, seed: int = 0, log=None) -> SiameseNet:
    "Train a Siamese network on same/different pairs of base-class photos (half of each)"
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    net = SiameseNet(copy.deepcopy(split_body(emb, n_train)[1]), emb.dim)
    for p in net.parameters(): p.requires_grad_(True)
    labels = np.asarray(labels)
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    cls = sorted(by_class)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.eval()
    with torch.no_grad(): net.fc.weight.clamp_(max=0)
    for step in range(steps):
        same = rng.random(pairs) < .5
        c1 = rng.choice(cls, pairs)
        c2 = np.where(same, c1, [rng.choice([c for c in cls if c != a]) for a in c1])
        i1 = np.array([rng.choice(by_class[c]) for c in c1])
        i2 = np.array([rng.choice(by_class[c][by_class[c] != i]) if s else rng.choice(by_class[c])
                       for c, i, s in zip(c2, i1, same)])
        z = net.embed(feats[torch.as_tensor(np.concatenate([i1, i2]))])
        logit = net.fc((z[:pairs] - z[pairs:]).abs()).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logit, torch.as_tensor(same, dtype=torch.float32))
        opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad(): net.fc.weight.clamp_(max=0)  # more different can only mean less alike
        if log and step % 50 == 0: log(f'step {step}: loss {loss.item():.3f}')
    for p in net.parameters(): p.requires_grad_(False)
    return net.eval()

def siamese_classify(net: SiameseNet, z: torch.Tensor, s_idx: np.ndarray, q_idx: np.ndarray) -> torch.Tensor:
    "Predicted class of each query: highest mean same-class probability over the class's support photos"
    w, k = s_idx.shape
    p = torch.sigmoid(net.pair_logits(z[torch.as_tensor(q_idx.reshape(-1))], z[torch.as_tensor(s_idx.reshape(-1))]))
    return p.view(-1, w, k).mean(2).argmax(1)

@torch.no_grad()
def siamese_embed(net: SiameseNet, feats: torch.Tensor, bs: int = 256) -> torch.Tensor:
    "The Siamese encoder's embedding of cached frozen features"
    return torch.cat([net.embed(feats[i:i+bs]) for i in range(0, len(feats), bs)])

