"""GCL's instance memory: the update rule, the three InfoNCE terms against a direct computation,
the negative and positive draws, prototypes, and the outlier guard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidgen.methods.gcl.memory import InstanceMemory


def _memory(rows: torch.Tensor, labels: list[int], **options) -> InstanceMemory:
    memory = InstanceMemory(len(rows), rows.shape[1], **options)
    memory.initialise(rows)
    memory.set_labels(torch.tensor(labels))
    return memory


def test_update_keeps_momentum_of_the_old_slot() -> None:
    memory = _memory(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), [0, 0, 1])
    memory.update(torch.tensor([[0.0, 3.0]]), torch.tensor([0]))
    expected = F.normalize(torch.tensor([0.2 * 1.0, 0.8 * 1.0]), dim=0)
    torch.testing.assert_close(memory.features[0], expected)
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0]))


def test_loss_equals_direct_computation() -> None:
    torch.manual_seed(0)
    # Members of a cluster share one memory row, so the drawn positive does not matter.
    centres = F.normalize(torch.randn(3, 6), dim=1)
    labels = [0, 0, 1, 1, 2, -1]
    rows = torch.stack([centres[max(label, 0)] for label in labels])
    rows[5] = F.normalize(torch.randn(6), dim=0)
    memory = _memory(rows, labels, temperature=0.1, num_negatives=100)
    indices = torch.tensor([0, 2, 4])
    original, generated = torch.randn(3, 6), torch.randn(3, 6)
    loss = memory.loss(original, generated, indices, torch.Generator().manual_seed(1))

    f, g, m = F.normalize(original, dim=1), F.normalize(generated, dim=1), memory.features
    expected = torch.zeros(())
    for b, i in enumerate(indices.tolist()):
        negatives = [j for j in range(6) if labels[j] != labels[i]]  # outlier 5 included
        negative_logits = torch.stack([g[b] @ m[j] for j in negatives])
        for query, positive in ((g[b], m[i]), (g[b], m[i]), (f[b], m[i])):
            logits = torch.cat([(query @ positive).view(1), negative_logits]) / 0.1
            expected = expected - torch.log_softmax(logits, 0)[0] / 3
    torch.testing.assert_close(loss, expected)


def test_originals_only_scores_negatives_against_originals() -> None:
    torch.manual_seed(0)
    rows = F.normalize(torch.randn(4, 5), dim=1)
    memory = _memory(rows, [0, 1, 2, 3], temperature=0.5)
    original = torch.randn(2, 5)
    loss = memory.loss(original, None, torch.tensor([1, 3]))
    f = F.normalize(original, dim=1)
    logits = (
        torch.stack(
            [
                torch.cat([(f[0] @ rows[1]).view(1), f[0] @ rows[[0, 2, 3]].T]),
                torch.cat([(f[1] @ rows[3]).view(1), f[1] @ rows[[0, 1, 2]].T]),
            ]
        )
        / 0.5
    )
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(2, dtype=torch.long)))


def test_draws_are_distinct_in_set_and_padded() -> None:
    memory = _memory(torch.randn(10, 3), [0, 0, 0, 1, 1, 1, 1, 2, 2, -1])
    allowed = memory.labels[None, :] != memory.labels[torch.tensor([0, 3])][:, None]
    draws = memory._draw(allowed, 8, torch.Generator().manual_seed(0))
    assert sorted(draws[0].tolist()) == [-1, 3, 4, 5, 6, 7, 8, 9]
    assert sorted(draws[1].tolist()) == [-1, -1, 0, 1, 2, 7, 8, 9]
    few = memory._draw(allowed, 2, torch.Generator().manual_seed(0))
    assert all(allowed[r, few[r]].all() for r in range(2)) and few.unique(dim=1).shape[1] == 2
    seen = set()
    for seed in range(40):
        same = memory.labels[None, :] == memory.labels[torch.tensor([3])][:, None]
        seen |= set(memory._draw(same, 1, torch.Generator().manual_seed(seed))[0].tolist())
    assert seen == {3, 4, 5, 6}  # uniform over the cluster, the image itself included


def test_prototypes_are_cluster_means_and_outliers_are_refused() -> None:
    rows = F.normalize(torch.randn(5, 4), dim=1)
    memory = _memory(rows, [1, 0, 1, -1, 0])
    torch.testing.assert_close(
        memory.prototypes(), torch.stack([(rows[1] + rows[4]) / 2, (rows[0] + rows[2]) / 2])
    )
    with pytest.raises(ValueError, match="outlier"):
        memory.loss(torch.randn(1, 4), None, torch.tensor([3]))
    with pytest.raises(ValueError, match="memory holds"):
        memory.initialise(torch.randn(4, 4))
