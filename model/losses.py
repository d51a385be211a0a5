"""Training losses: 1 - CCC per attribute (NaN-masked) and the temporal triplet margin loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - CCC per attribute column [A] over the batch; NaN targets are ignored; 0 for a column with < 2 values."""
    if pred.dim() == 1:
        pred, target = pred.unsqueeze(1), target.unsqueeze(1)
    if pred.shape != target.shape:
        raise ValueError(f"ccc_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    mask = ~torch.isnan(target)
    w = mask.to(pred.dtype)
    count = w.sum(dim=0)
    n = count.clamp(min=1.0)
    t = torch.where(mask, target, torch.zeros_like(target)).to(pred.dtype)
    p = torch.where(mask, pred, torch.zeros_like(pred))
    mean_t, mean_p = t.sum(0) / n, p.sum(0) / n
    dt, dp = (t - mean_t) * w, (p - mean_p) * w
    var_t, var_p = (dt * dt).sum(0) / n, (dp * dp).sum(0) / n
    cov = (dt * dp).sum(0) / n
    denom = var_t + var_p + (mean_t - mean_p) ** 2
    ccc = 2.0 * cov / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(count >= 2, 1.0 - ccc, torch.zeros_like(ccc))


def sample_triplets(num_sentences: int, C: int, window: int, per_sentence: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(anchor, positive, negative) chunk positions within a sentence, per_sentence rows per sentence in order."""
    if window < 1:
        raise ValueError(f"triplet window must be >= 1, got {window}")
    if C < window + 2:
        raise ValueError(f"triplets need chunks_per_sentence C >= window + 2 = {window + 2}, got C = {C}")
    total = num_sentences * per_sentence
    anchor = torch.randint(0, C, (total,), generator=generator)
    positions = torch.arange(C)
    has_negative = (positions - window - 1 >= 0) | (positions + window + 1 <= C - 1)
    valid = positions[has_negative]
    redo = ~has_negative[anchor]
    anchor[redo] = valid[torch.randint(0, len(valid), (int(redo.sum()),), generator=generator)]
    # positive: uniform over [a - w, a + w] ∩ [0, C - 1] without a itself
    lo = (anchor - window).clamp(min=0)
    hi = (anchor + window).clamp(max=C - 1)
    n_pos = hi - lo
    r = (torch.rand(total, generator=generator) * n_pos).long().clamp(max=n_pos - 1)
    positive = lo + r
    positive = positive + (positive >= anchor).long()
    # negative: uniform over [0, a - w - 1] ∪ [a + w + 1, C - 1]
    n_left = (anchor - window).clamp(min=0)
    n_right = (C - 1 - anchor - window).clamp(min=0)
    n_neg = n_left + n_right
    r = (torch.rand(total, generator=generator) * n_neg).long().clamp(max=n_neg - 1)
    negative = torch.where(r < n_left, r, anchor + window + 1 + (r - n_left))
    return torch.stack([anchor, positive, negative], dim=1)


def triplet_loss(embeddings: torch.Tensor, margin: float, window: int, per_sentence: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Euclidean triplet margin loss over per_sentence sampled triplets of every sentence of embeddings [B, C, D]."""
    if embeddings.dim() != 3:
        raise ValueError(f"triplet_loss needs embeddings [B, C, D], got shape {tuple(embeddings.shape)}")
    B, C, _ = embeddings.shape
    triplets = sample_triplets(B, C, window, per_sentence, generator).to(embeddings.device)
    sentence = torch.arange(B, device=embeddings.device).repeat_interleave(per_sentence)
    a, p, n = (embeddings[sentence, triplets[:, i]] for i in range(3))
    return F.triplet_margin_loss(a, p, n, margin=margin, p=2)
