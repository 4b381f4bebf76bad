"""``analyze_dark_knowledge``: what a teacher's soft targets carry beyond the label.

The source text's version printed its findings and computed entropies as
``-(p * p.log()).sum()``, which is ``nan`` as soon as a probability underflows to 0
(``0 * log 0 = 0 * -inf``); here entropies use ``torch.special.entr`` (defined as 0
at p = 0), and the function returns numbers for the notebook to print or plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbook.losses import check_logits, check_temperature
from kdbook.models import evaluating


@dataclass
class DarkKnowledge:
    """Soft targets at T = 1 and at T, their entropies (nats) and top-k entries, per sample."""

    temperature: float
    probs_t1: Tensor  # (N, C) softmax(z)
    probs_T: Tensor  # (N, C) softmax(z / T)
    entropy_t1: Tensor  # (N,)
    entropy_T: Tensor  # (N,)
    topk_t1: torch.return_types.topk
    topk_T: torch.return_types.topk
    label_prob_t1: Tensor  # (N,) probability given to the true label at T = 1
    label_prob_T: Tensor  # (N,) ... and at T


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats along the last dimension, with 0 log 0 = 0."""
    return torch.special.entr(probs).sum(dim=-1)


@torch.no_grad()
def analyze_dark_knowledge(teacher: nn.Module, inputs: Tensor, labels: Tensor,
                           temperature: float = 4.0, k: int = 5) -> DarkKnowledge:
    """Runs ``teacher`` (in eval mode) on ``inputs`` and describes its soft targets."""
    T = check_temperature(temperature)
    with evaluating(teacher):
        logits = check_logits(teacher(inputs).float(), "teacher output")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must lie in [1, {logits.shape[1]}], got {k!r}")
    p1, pT = F.softmax(logits, dim=1), F.softmax(logits / T, dim=1)
    labels = labels.to(logits.device)
    return DarkKnowledge(
        temperature=T, probs_t1=p1, probs_T=pT, entropy_t1=entropy(p1), entropy_T=entropy(pT),
        topk_t1=p1.topk(k, dim=1), topk_T=pT.topk(k, dim=1),
        label_prob_t1=p1.gather(1, labels[:, None]).squeeze(1),
        label_prob_T=pT.gather(1, labels[:, None]).squeeze(1),
    )
