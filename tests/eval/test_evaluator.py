"""The Evaluator: protocol dispatch, flip test, query expansion and re-ranking."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from reidgen.eval import evaluate_ranking, pairwise_distance
from reidgen.eval.evaluator import Evaluator
from reidgen.eval.features import Features
from reidgen.eval.protocols import MarketProtocol, VehicleIDProtocol
from reidgen.eval.rerank import rerank_features
from reidgen.eval.target import EvalTarget
from reidgen.methods.base import ReIDMethod


class Identity(ReIDMethod):
    """A method whose features are its input pixels, flattened."""

    def __init__(self, **settings) -> None:
        super().__init__(num_classes=1, **settings)

    def extract(self, images: Tensor) -> Features:
        return Features.embedding(images.flatten(1))


def score(
    evaluator: Evaluator,
    method: ReIDMethod,
    features: Tensor | Features,
    pids: Tensor,
    camids: Tensor,
    num_query: int,
    protocol=None,
    *,
    timestamps: Tensor | None = None,
    target: str = "target",
) -> dict[str, float]:
    """``evaluator.evaluate`` on plain tensors: an embedding (or a record) and its metadata."""
    record = features if isinstance(features, Features) else Features.embedding(features)
    times = torch.full((len(pids),), math.nan, dtype=torch.float64)
    eval_target = EvalTarget(
        name=target,
        pids=pids,
        camids=camids,
        num_query=num_query,
        protocol=protocol or MarketProtocol(),
        timestamps=times if timestamps is None else timestamps,
    )
    return evaluator.evaluate(record, eval_target, method.comparison())


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
    metrics = score(Evaluator(), Identity(), features, pids, camids, num_query)
    expected = evaluate_ranking(
        pairwise_distance(features[:num_query], features[num_query:], "cosine"),
        pids[:num_query], camids[:num_query], pids[num_query:], camids[num_query:],
    )  # fmt: skip
    assert metrics == expected


def test_rerank_uses_the_methods_rows_and_improves_clustered_retrieval() -> None:
    features, pids, camids, num_query = clustered()
    plain = score(Evaluator(), Identity(), features, pids, camids, num_query)
    reranked = score(
        Evaluator(rerank=True, k1=6, k2=3), Identity(), features, pids, camids, num_query
    )
    reference = rerank_features(features[:num_query], features[num_query:], "cosine", 6, 3)
    expected = evaluate_ranking(
        reference, pids[:num_query], camids[:num_query], pids[num_query:], camids[num_query:]
    )
    assert reranked["mAP"] == pytest.approx(expected["mAP"], abs=1e-4)
    assert reranked["mAP"] > plain["mAP"]


def test_query_expansion_improves_clustered_retrieval_and_needs_embeddings() -> None:
    features, pids, camids, num_query = clustered()
    plain = score(Evaluator(), Identity(), features, pids, camids, num_query)
    expanded = score(
        Evaluator(aqe=True, aqe_top_k=3), Identity(), features, pids, camids, num_query
    )
    assert expanded["mAP"] > plain["mAP"]
    maps = Features({"maps": features.view(-1, 4, 2, 2)})
    with pytest.raises(ValueError, match=r"query expansion \(eval.aqe\) needs a plain embedding"):
        score(Evaluator(aqe=True), Identity(), maps, pids, camids, 5)


def test_query_expansion_acts_on_the_embedding_part_only() -> None:
    features, pids, camids, num_query = clustered()
    stripes = torch.randn(len(features), 3, 2)
    record = Features({"embedding": features, "stripes": stripes})
    seen: list[Features] = []

    class Recording(Identity):
        def distance(self, query_features: Features, gallery_features: Features):
            seen.extend([query_features, gallery_features])
            return super().distance(query_features, gallery_features)

    expanded = score(Evaluator(aqe=True, aqe_top_k=3), Recording(), record, pids, camids, num_query)
    plain_expanded = score(
        Evaluator(aqe=True, aqe_top_k=3), Identity(), features, pids, camids, num_query
    )
    assert expanded == plain_expanded
    assert torch.equal(torch.cat([seen[0]["stripes"], seen[1]["stripes"]]), stripes)
    assert not torch.equal(torch.cat([seen[0]["embedding"], seen[1]["embedding"]]), features)


def test_pooled_protocols_get_all_samples_and_refuse_reranking() -> None:
    features, pids, camids, _ = clustered()
    protocol = VehicleIDProtocol(repeats=3, seed=1)
    metrics = score(Evaluator(), Identity(), features, pids, camids, 0, protocol)
    distance = pairwise_distance(features, features, "cosine")
    assert metrics == protocol.evaluate_all(distance, pids)
    with pytest.raises(ValueError, match="re-ranking needs a fixed query/gallery split"):
        score(Evaluator(rerank=True), Identity(), features, pids, camids, 0, protocol)


def test_flip_test_averages_an_image_and_its_mirror() -> None:
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    plain = Identity().extract_for_eval(images)
    assert torch.equal(plain["embedding"], images.flatten(1))
    flipped = Identity(evaluation={"flip": True}).extract_for_eval(images)
    expected = ((images + images.flip(3)) / 2).flatten(1)
    assert torch.equal(flipped["embedding"], expected)


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
