"""TLift in the Evaluator: the official chain, targets it cannot apply to, and _finish_eval."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
import torch
from torch import Tensor

from reidgen.data.sample import Splits
from reidgen.eval import evaluate_ranking
from reidgen.eval.evaluator import Comparison, Evaluator
from reidgen.eval.features import Features
from reidgen.eval.protocols import MarketProtocol, VehicleIDProtocol
from reidgen.eval.ranking import DistanceFn
from reidgen.eval.rerank import RowsFn, rerank
from reidgen.eval.tlift import ECCV_DEFAULTS, tlift_distance
from tests.eval.test_evaluator import Identity, clustered, score


class FixedDistance:
    """A "method" whose distances are given: ``[Q, G]`` for ranking, ``[N, N]`` for re-ranking."""

    def __init__(self, query_gallery: Tensor, all_pairs: Tensor | None = None) -> None:
        self.query_gallery = query_gallery
        self.all_pairs = all_pairs

    def distance(self, query_features: Tensor, gallery_features: Tensor) -> DistanceFn:
        return lambda start, stop: self.query_gallery[start:stop]

    def rerank_rows(self, features: Tensor, num_query: int) -> RowsFn:
        assert self.all_pairs is not None
        return lambda start, stop: self.all_pairs[start:stop]

    def comparison(self) -> Comparison:
        return Comparison(distance=self.distance, rerank_input=self.rerank_rows)


def ranked(distance: Tensor, pids: Tensor, camids: Tensor, num_query: int) -> dict[str, float]:
    """The Market protocol on a ``[Q, G]`` distance, without the Evaluator."""
    q, g = slice(None, num_query), slice(num_query, None)
    return evaluate_ranking(distance, pids[q], camids[q], pids[g], camids[g])


def lifted(distance: Tensor, camids: Tensor, times: Tensor, num_query: int, **params) -> Tensor:
    """``tlift_distance`` of a ``[Q, G]`` distance, the sides split at ``num_query``."""
    q, g = slice(None, num_query), slice(num_query, None)
    return tlift_distance(distance, camids[q], times[q], camids[g], times[g], **params)


def without_flag(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if key != "tlift"}


# Two people walk together past camera 0 (queries A and B, 10 s apart) and reach camera 1 about
# 500 s later (gallery A at 500 s, B at 510 s); a third person C, who looks like A, passes camera 1
# at 2000 s. The method confuses A with C: A's top-1 is C. B is matched confidently.
#                 gallery:  A(t=500) B(t=510) C(t=2000)
CROSSING = torch.tensor(
    [
        [0.6, 0.9, 0.5],  # query A (t=0): C wrongly first
        [0.9, 0.2, 0.95],  # query B (t=10)
    ],
    dtype=torch.float64,
)
CROSSING_PIDS = torch.tensor([1, 2, 1, 2, 3])
CROSSING_CAMS = torch.tensor([0, 0, 1, 1, 1])
CROSSING_TIMES = torch.tensor([0.0, 10.0, 500.0, 510.0, 2000.0], dtype=torch.float64)


def test_tlift_fixes_a_wrong_top1_by_temporal_co_occurrence() -> None:
    # ECCV defaults (tau 100 s, sigma 200 s, K 10, alpha 0.2). A and B are within tau in camera 0,
    # so both use the block of scores 1 - d = [[.4, .1, .5], [.1, .8, .05]]; it has 6 <= K
    # entries, so every entry is a pivot: columns A, B, C twice each, at 500, 510 and 2000 s.
    # Weights: w(A) = (1 + exp(-(10/200)**2) + exp(-(1500/200)**2)) / 3 = 0.666,
    #          w(C) = (exp(-(1500/200)**2) + exp(-(1490/200)**2) + 1) / 3 = 0.333.
    # Query A: lifted score of A = (0.666 + 0.2) * 0.4 = 0.347 > of C = (0.333 + 0.2) * 0.5 = 0.267.
    features = torch.zeros(5, 1)
    method = FixedDistance(CROSSING)
    plain = score(Evaluator(), method, features, CROSSING_PIDS, CROSSING_CAMS, 2)
    metrics = score(
        Evaluator(tlift=True),
        method,
        features,
        CROSSING_PIDS,
        CROSSING_CAMS,
        2,
        timestamps=CROSSING_TIMES,
    )
    assert (plain["rank1"], plain["mAP"]) == (50.0, 75.0)
    assert (metrics["rank1"], metrics["mAP"]) == (100.0, 100.0)
    assert metrics["tlift"] is True
    distance = lifted(CROSSING, CROSSING_CAMS, CROSSING_TIMES, 2)
    assert distance[0, 0] == pytest.approx(1 - (2 / 3 + 0.2) * 0.4, abs=1e-3)
    assert distance[0, 2] == pytest.approx(1 - (1 / 3 + 0.2) * 0.5, abs=1e-3)
    assert without_flag(metrics) == ranked(distance, CROSSING_PIDS, CROSSING_CAMS, 2)


def test_tlift_is_the_protocol_on_tlift_distance_with_the_given_parameters() -> None:
    generator = torch.Generator().manual_seed(0)
    num_query, num_gallery = 23, 61
    pids = torch.randint(1, 9, (num_query + num_gallery,), generator=generator)
    camids = torch.randint(0, 4, (num_query + num_gallery,), generator=generator)
    times = torch.rand(num_query + num_gallery, generator=generator, dtype=torch.float64) * 600
    distance = torch.rand(num_query, num_gallery, generator=generator)
    params = {"tau": 60.0, "sigma": 90.0, "K": 4, "alpha": 0.1}
    evaluator = Evaluator(tlift=True, tlift_tau=60.0, tlift_sigma=90.0, tlift_k=4, tlift_alpha=0.1)
    # A chunk size that does not divide Q: the matrix is assembled from uneven row chunks.
    metrics = score(
        evaluator,
        FixedDistance(distance),
        torch.zeros(num_query + num_gallery, 1),
        pids,
        camids,
        num_query,
        MarketProtocol(chunk_size=5),
        timestamps=times,
    )
    expected = ranked(lifted(distance, camids, times, num_query, **params), pids, camids, num_query)
    assert without_flag(metrics) == expected
    assert expected != ranked(distance, pids, camids, num_query)


def test_rerank_then_tlift_is_tlift_of_the_reranked_distance() -> None:
    features, pids, camids, num_query = clustered()
    times = torch.arange(len(features), dtype=torch.float64) * 37.0 % 900.0
    method = Identity()
    metrics = score(
        Evaluator(rerank=True, k1=6, k2=3, tlift=True),
        method,
        features,
        pids,
        camids,
        num_query,
        timestamps=times,
    )
    reranked = rerank(
        method.rerank_rows(Features.embedding(features), num_query),
        num_query,
        6,
        3,
        num_total=len(features),
    )
    distance = lifted(reranked(0, num_query), camids, times, num_query)
    assert without_flag(metrics) == ranked(distance, pids, camids, num_query)
    assert metrics["tlift"] is True
    rerank_only = score(
        Evaluator(rerank=True, k1=6, k2=3), method, features, pids, camids, num_query
    )
    assert without_flag(metrics) != rerank_only


def test_half_precision_distances_are_lifted_in_float32() -> None:
    features = torch.zeros(5, 1)
    method = FixedDistance(CROSSING.half())
    metrics = score(
        Evaluator(tlift=True),
        method,
        features,
        CROSSING_PIDS,
        CROSSING_CAMS,
        2,
        timestamps=CROSSING_TIMES,
    )
    distance = lifted(CROSSING.half().float(), CROSSING_CAMS, CROSSING_TIMES, 2)
    assert without_flag(metrics) == ranked(distance, CROSSING_PIDS, CROSSING_CAMS, 2)


@pytest.mark.parametrize(
    ("times", "reason"),
    [
        (None, "no timestamps"),
        (torch.tensor([0.0, 10.0, math.nan, 510.0, 2000.0], dtype=torch.float64), "1 of 5"),
    ],
)
def test_a_target_without_timestamps_is_evaluated_without_tlift_and_flagged(
    times: Tensor | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    features = torch.zeros(5, 1)
    method = FixedDistance(CROSSING)
    plain = score(Evaluator(), method, features, CROSSING_PIDS, CROSSING_CAMS, 2)
    with caplog.at_level(logging.WARNING, logger="reidgen.eval.evaluator"):
        metrics = score(
            Evaluator(tlift=True),
            method,
            features,
            CROSSING_PIDS,
            CROSSING_CAMS,
            2,
            timestamps=times,
            target="cuhk03",
        )
    assert metrics == {**plain, "tlift": False}
    assert "cuhk03 is evaluated without TLift" in caplog.text and reason in caplog.text


def test_a_pooled_protocol_is_evaluated_without_tlift_and_flagged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    features, pids, camids, _ = clustered()
    times = torch.arange(len(features), dtype=torch.float64)
    protocol = VehicleIDProtocol(repeats=2, seed=1)
    plain = score(Evaluator(), Identity(), features, pids, camids, 0, protocol)
    with caplog.at_level(logging.WARNING, logger="reidgen.eval.evaluator"):
        metrics = score(
            Evaluator(tlift=True),
            Identity(),
            features,
            pids,
            camids,
            0,
            protocol,
            timestamps=times,
            target="vehicleid",
        )
    assert metrics == {**plain, "tlift": False}
    assert "vehicleid is evaluated without TLift" in caplog.text
    assert "fixed query set" in caplog.text


def test_distances_outside_the_unit_interval_are_a_clear_error() -> None:
    features, pids, camids, num_query = clustered()
    times = torch.zeros(len(features), dtype=torch.float64)
    # Cosine distances of these features reach well above 1: TLift alone refuses them ...
    with pytest.raises(ValueError, match=r"needs distances in \[0, 1\].*eval\.rerank=true"):
        score(
            Evaluator(tlift=True), Identity(), features, pids, camids, num_query, timestamps=times
        )
    # ... and so it does negative distances such as QAConv HEAD's -score.
    with pytest.raises(ValueError, match=r"spans \[-0\.9"):
        score(Evaluator(tlift=True),
            FixedDistance(-CROSSING), torch.zeros(5, 1), CROSSING_PIDS, CROSSING_CAMS, 2,
            timestamps=CROSSING_TIMES,
        )  # fmt: skip
    # Rounding just outside [0, 1] is accepted, as tlift_distance accepts it.
    almost = CROSSING.clone()
    almost[0, 0], almost[1, 0] = -5e-5, 1 + 5e-5
    score(Evaluator(tlift=True),
        FixedDistance(almost), torch.zeros(5, 1), CROSSING_PIDS, CROSSING_CAMS, 2,
        timestamps=CROSSING_TIMES,
    )  # fmt: skip


def test_timestamps_must_match_the_samples() -> None:
    with pytest.raises(
        ValueError, match=r"timestamps of street have shape \(4,\), expected \(5,\)"
    ):
        score(Evaluator(tlift=True),
            FixedDistance(CROSSING), torch.zeros(5, 1), CROSSING_PIDS, CROSSING_CAMS, 2,
            timestamps=CROSSING_TIMES[:4], target="street",
        )  # fmt: skip


def test_settings_and_config_carry_the_eccv_defaults() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    settings = Evaluator().settings()
    assert settings["tlift"] is False
    assert {
        "tau": settings["tlift_tau"],
        "sigma": settings["tlift_sigma"],
        "K": settings["tlift_k"],
        "alpha": settings["tlift_alpha"],
    } == ECCV_DEFAULTS
    config = OmegaConf.load(Path(str(resources.files("reidgen.conf"))) / "eval" / "default.yaml")
    assert instantiate(config).settings() == settings


class Untimed:
    """A target whose samples carry no timestamps, as CUHK03 or VeRi-776."""

    def __init__(self, source) -> None:
        self.source = source
        self.name = f"{source.name}_untimed"

    def load(self) -> Splits:
        splits = self.source.load()
        return replace(
            splits,
            query=[replace(s, timestamp=None) for s in splits.query],
            gallery=[replace(s, timestamp=None) for s in splits.gallery],
        )


def test_finish_eval_passes_each_targets_timestamps(
    tiny_street: Path, synth_data_dir: Path
) -> None:
    import pytorch_lightning as pl

    from reidgen.data.datamodule import ReIDDataModule
    from reidgen.data.sources import SynthPersonSource
    from reidgen.data.transforms import build_transforms

    street = SynthPersonSource("street", "tiny", data_dir=str(synth_data_dir))
    transform = build_transforms(128, 64, train=False)
    module = ReIDDataModule(
        [], [street, Untimed(street)], transform, transform, eval_batch_size=16, num_workers=0
    )
    method = Identity(evaluation={"rerank": True, "tlift": True})
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(method, datamodule=module, verbose=False)
    results = method.eval_results["test"]

    # The reference, from the splits' own order: queries, then gallery.
    splits = street.load()
    samples = splits.query + splits.gallery
    dataset = module.eval_sets["synth_street"]
    features = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).flatten(1)
    pids = torch.tensor([s.pid for s in samples])
    camids = torch.tensor([s.camid for s in samples])
    times = torch.tensor([s.timestamp for s in samples], dtype=torch.float64)
    num_query = len(splits.query)
    reranked = rerank(
        method.rerank_rows(Features.embedding(features), num_query),
        num_query,
        num_total=len(features),
    )(0, num_query)
    expected = ranked(lifted(reranked, camids, times, num_query), pids, camids, num_query)
    unlifted = ranked(reranked, pids, camids, num_query)
    assert expected != unlifted  # TLift changes this target's numbers
    sizes = {"num_query": num_query, "num_gallery": len(splits.gallery)}
    assert results["synth_street"] == {**expected, "tlift": True, **sizes}
    assert results["synth_street_untimed"] == {**unlifted, "tlift": False, **sizes}
