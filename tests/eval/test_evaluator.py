"""The Evaluator: protocol dispatch, flip test, query expansion and re-ranking."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from reidgen.eval import evaluate_ranking, pairwise_distance
from reidgen.eval.evaluator import Evaluator
from reidgen.eval.protocols import VehicleIDProtocol
from reidgen.eval.rerank import rerank_features
from reidgen.methods.base import ReIDMethod


class Identity(ReIDMethod):
    """A method whose features are its input pixels, flattened."""

    def __init__(self) -> None:
        super().__init__(num_classes=1)

    def extract(self, images: Tensor) -> Tensor:
        return images.flatten(1)


def clustered(num_ids: int = 30, per_id: int = 6, dim: int = 16, seed: int = 0):
    """Features around one centre per identity; each identity seen by 3 cameras."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_ids, dim, generator=generator)
    pids = torch.arange(num_ids).repeat_interleave(per_id)
    camids = torch.arange(per_id).repeat(num_ids) % 3
    features = centres[pids] + 0.9 * torch.randn(len(pids), dim, generator=generator)
    query = torch.arange(len(pids)) % per_id == 0
    order = torch.cat([torch.nonzero(query).squeeze(1), torch.nonzero(~query).squeeze(1)])
    return features[order], pids[order] + 1, camids[order], int(query.sum())


def test_default_is_the_market_protocol_on_cosine_distance() -> None:
    features, pids, camids, num_query = clustered()
    metrics = Evaluator().evaluate(Identity(), features, pids, camids, num_query)
    expected = evaluate_ranking(
        pairwise_distance(features[:num_query], features[num_query:], "cosine"),
        pids[:num_query], camids[:num_query], pids[num_query:], camids[num_query:],
    )  # fmt: skip
    assert metrics == expected


def test_rerank_uses_the_methods_rows_and_improves_clustered_retrieval() -> None:
    features, pids, camids, num_query = clustered()
    plain = Evaluator().evaluate(Identity(), features, pids, camids, num_query)
    reranked = Evaluator(rerank=True, k1=6, k2=3).evaluate(
        Identity(), features, pids, camids, num_query
    )
    reference = rerank_features(features[:num_query], features[num_query:], "cosine", 6, 3)
    expected = evaluate_ranking(
        reference, pids[:num_query], camids[:num_query], pids[num_query:], camids[num_query:]
    )
    assert reranked["mAP"] == pytest.approx(expected["mAP"], abs=1e-4)
    assert reranked["mAP"] > plain["mAP"]


def test_query_expansion_improves_clustered_retrieval_and_needs_embeddings() -> None:
    features, pids, camids, num_query = clustered()
    plain = Evaluator().evaluate(Identity(), features, pids, camids, num_query)
    expanded = Evaluator(aqe=True, aqe_top_k=3).evaluate(
        Identity(), features, pids, camids, num_query
    )
    assert expanded["mAP"] > plain["mAP"]
    with pytest.raises(ValueError, match="query expansion needs embeddings"):
        Evaluator(aqe=True).evaluate(Identity(), features.view(-1, 4, 2, 2), pids, camids, 5)


def test_pooled_protocols_get_all_samples_and_refuse_reranking() -> None:
    features, pids, camids, _ = clustered()
    protocol = VehicleIDProtocol(repeats=3, seed=1)
    metrics = Evaluator().evaluate(Identity(), features, pids, camids, 0, protocol)
    distance = pairwise_distance(features, features, "cosine")
    assert metrics == protocol.evaluate_all(distance, pids)
    with pytest.raises(ValueError, match="re-ranking needs a fixed query/gallery split"):
        Evaluator(rerank=True).evaluate(Identity(), features, pids, camids, 0, protocol)


def test_flip_test_averages_an_image_and_its_mirror() -> None:
    method = Identity()
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    assert torch.equal(method._extract_for_eval(images), images.flatten(1))
    method.evaluator = Evaluator(flip=True)
    expected = ((images + images.flip(3)) / 2).flatten(1)
    assert torch.equal(method._extract_for_eval(images), expected)


def test_a_targets_protocol_comes_from_its_data_config(synth_data_dir) -> None:
    from hydra.utils import instantiate

    from reidgen.data.datamodule import ReIDDataModule
    from reidgen.data.transforms import build_transforms
    from reidgen.eval.protocols import CUHK03ClassicProtocol, MarketProtocol

    target = instantiate(
        {
            "_target_": "reidgen.data.sources.SynthPersonSource",
            "domain": "street",
            "preset": "tiny",
            "data_dir": str(synth_data_dir),
            "protocol": {"_target_": "reidgen.eval.protocols.CUHK03ClassicProtocol", "seed": 3},
        }
    )
    plain = instantiate(
        {
            "_target_": "reidgen.data.sources.SynthPersonSource",
            "domain": "studio",
            "preset": "tiny",
            "data_dir": str(synth_data_dir),
        }
    )
    transform = build_transforms(128, 64, train=False)
    module = ReIDDataModule([], [target, plain], transform, transform)
    module.setup("test")
    assert isinstance(module.eval_sets["synth_street"].protocol, CUHK03ClassicProtocol)
    assert type(module.eval_sets["synth_studio"].protocol) is MarketProtocol
