"""ReIDDataModule, relabelling, the torch datasets and their samplers, on tiny SynthPerson data."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reidgen.data.datamodule import ReIDDataModule, relabel
from reidgen.data.dataset import EvalDataset, TrainDataset, UnreadableImageError, read_image
from reidgen.data.sample import Sample, Splits
from reidgen.data.samplers import EpochTaggedSampler, RandomIdentitySampler, ShardSampler
from reidgen.data.sources import SynthPersonSource
from reidgen.data.transforms import build_transforms
from reidgen.methods.base import ReIDMethod

HEIGHT, WIDTH = 32, 16
BATCH, K = 8, 2  # P = 4 identities per batch


def train_transform():
    return build_transforms(HEIGHT, WIDTH, train=True, pad=2, random_erasing_prob=0.5)


def eval_transform():
    return build_transforms(HEIGHT, WIDTH, train=False)


@pytest.fixture(scope="module")
def street(tiny_street: Path, synth_data_dir: Path) -> SynthPersonSource:
    return SynthPersonSource("street", "tiny", data_dir=str(synth_data_dir))


@pytest.fixture(scope="module")
def studio(tiny_studio: Path, synth_data_dir: Path) -> SynthPersonSource:
    return SynthPersonSource("studio", "tiny", data_dir=str(synth_data_dir))


def make_module(sources, targets, **kwargs) -> ReIDDataModule:
    options = {
        "batch_size": BATCH,
        "num_instances": K,
        "eval_batch_size": 16,
        "num_workers": 0,
        "seed": 0,
    }
    options.update(kwargs)
    return ReIDDataModule(sources, targets, train_transform(), eval_transform(), **options)


def sample(path: str, pid: int, dataset: str, camid: int = 0) -> Sample:
    return Sample(path=path, pid=pid, camid=camid, dataset=dataset)


# --------------------------------------------------------------------------------- relabel
def test_relabel_keys_by_dataset_and_pid_sorted_whatever_the_source_order() -> None:
    a = Splits("a", [sample("a/3", 5, "a"), sample("a/1", 1, "a"), sample("a/2", 3, "a")], [], [])
    a = Splits("a", a.train + [sample("a/4", 5, "a")], [], [])
    b = Splits("b", [sample("b/2", 2, "b"), sample("b/1", 1, "b")], [], [])

    # Labels follow the sorted (dataset, pid) keys; pid 1 of "a" and of "b" are two identities.
    label_of = relabel([b, a])
    assert label_of == {("a", 1): 0, ("a", 3): 1, ("a", 5): 2, ("b", 1): 3, ("b", 2): 4}
    assert relabel([a, b]) == label_of


def test_relabel_rejects_duplicate_source_names() -> None:
    a = Splits("same", [sample("x/1", 1, "same")], [], [])
    b = Splits("same", [sample("y/1", 2, "same")], [], [])
    with pytest.raises(ValueError, match="distinct names"):
        relabel([a, b])


def test_relabel_two_synthperson_domains_with_overlapping_pids(street, studio) -> None:
    s1, s2 = street.load(), studio.load()
    pids1, pids2 = {s.pid for s in s1.train}, {s.pid for s in s2.train}
    assert pids1 & pids2, "the fixture domains should share pid numbers for this test to bite"
    label_of = relabel([s1, s2])
    assert len(label_of) == len(pids1) + len(pids2)
    assert sorted(label_of.values()) == list(range(len(label_of)))
    assert list(label_of) == sorted(label_of)


# ----------------------------------------------------------------------------- data module
def test_num_classes_before_setup_raises(street) -> None:
    module = make_module([street], [street])
    with pytest.raises(RuntimeError, match="setup"):
        _ = module.num_classes


def test_empty_targets_rejected(street) -> None:
    with pytest.raises(ValueError, match="targets"):
        make_module([street], [])


def test_setup_fit_counts_identities_of_all_sources(street, studio) -> None:
    module = make_module([street, studio], [street, studio])
    module.setup("fit")
    expected = street.load().summary()["train"]["identities"]
    expected += studio.load().summary()["train"]["identities"]
    assert module.num_classes == expected == 24
    assert len(module.train_set) == len(street.load().train) + len(studio.load().train)
    assert list(module.eval_sets) == module.target_names == ["synth_street", "synth_studio"]
    for source in (street, studio):
        splits = source.load()
        dataset = module.eval_sets[source.name]
        assert dataset.num_query == len(splits.query)
        assert len(dataset) == len(splits.query) + len(splits.gallery)
    module.setup("fit")  # safe to call twice
    assert module.num_classes == expected


class QueryAsTrainSource:
    """A copy of a dataset whose train split is that dataset's query images (a folder mix-up)."""

    def __init__(self, source: SynthPersonSource) -> None:
        self.source = source
        self.name = "mixed_up"

    def load(self) -> Splits:
        splits = self.source.load()
        return replace(splits, name=self.name, train=splits.query, variant="", expected=None)


@pytest.mark.parametrize("unlabelled", [[], ["mixed_up"]])
def test_training_source_holding_test_images_is_refused(studio, street, unlabelled) -> None:
    module = make_module(
        [street, QueryAsTrainSource(studio)], [studio], unlabelled=unlabelled, validation="off"
    )
    kind = "unlabelled source" if unlabelled else "training source"
    with pytest.raises(ValueError, match=f"{kind} 'mixed_up' contains .* of test target"):
        module.setup("fit")


def test_num_unlabelled_images_counts_the_unlabelled_sources(street, studio) -> None:
    module = make_module([street, studio], [studio], unlabelled=["synth_street"])
    with pytest.raises(RuntimeError, match="after setup"):
        module.num_unlabelled_images  # noqa: B018
    module.setup("fit")
    assert module.num_unlabelled_images == len(street.load().train)


class ExplodingSource:
    """A training source that must not be loaded by setup('test')."""

    name = "boom"

    def load(self) -> Splits:
        raise AssertionError("setup('test') loaded a training source")


def test_setup_test_needs_no_training_data(studio) -> None:
    module = make_module([], [studio])
    module.setup("test")
    assert module.train_set is None
    assert list(module.eval_sets) == ["synth_studio"]
    assert len(module.test_dataloader()) == 1
    with pytest.raises(RuntimeError):
        _ = module.num_classes

    module = make_module([ExplodingSource()], [studio])
    module.setup("test")
    assert module.train_set is None

    with pytest.raises(ValueError, match="sources"):
        make_module([], [studio]).setup("fit")


def check_pk_batch(batch: dict, train_set: TrainDataset) -> list[int]:
    """Asserts a batch is P groups of K images of one identity each; returns the labels."""
    pids = batch["pid"].view(-1, K)
    assert (pids == pids[:, :1]).all(), pids
    labels = pids[:, 0].tolist()
    assert len(set(labels)) == BATCH // K
    index = batch["index"].tolist()
    assert batch["pid"].tolist() == [train_set.labels[i] for i in index]
    assert batch["domain"].tolist() == [train_set.samples[i].domain for i in index]
    assert batch["source"].tolist() == [train_set.sources[i] for i in index]
    assert batch["camid"].tolist() == [train_set.samples[i].camid for i in index]
    return labels


@pytest.fixture(scope="module")
def fit_module(street, studio) -> ReIDDataModule:
    module = make_module([street, studio], [street, studio])
    module.setup("fit")
    return module


def test_train_loader_yields_pk_batch_dicts(fit_module: ReIDDataModule) -> None:
    loader = fit_module.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    seen = set()
    for batch in batches:
        assert set(batch) == {"image", "pid", "camid", "source", "domain", "index"}
        assert batch["image"].shape == (BATCH, 3, HEIGHT, WIDTH)
        assert batch["image"].dtype == torch.float32
        assert batch["pid"].dtype == torch.long
        check_pk_batch(batch, fit_module.train_set)
        seen.update(batch["pid"].tolist())
    # Both sources' identities are drawn; a source is its own domain.
    domains = {fit_module.train_set.samples[i].domain for b in batches for i in b["index"].tolist()}
    assert domains == {0, 1}
    for batch in batches:
        assert torch.equal(batch["source"], batch["domain"])
    assert seen <= set(range(fit_module.num_classes))


def test_domain_balanced_batches_take_equal_identities_per_domain(street, studio) -> None:
    module = make_module([street, studio], [street], domain_balanced=True)
    module.setup("fit")
    batches = list(module.train_dataloader())
    assert batches
    for batch in batches:
        labels = check_pk_batch(batch, module.train_set)
        domain_of_group = batch["domain"].view(-1, K)[:, 0].tolist()
        assert len(labels) == len(domain_of_group)
        assert Counter(domain_of_group) == {0: BATCH // K // 2, 1: BATCH // K // 2}


def test_eval_loaders_cover_every_index_once_with_their_target(fit_module) -> None:
    loaders = fit_module.test_dataloader()
    assert len(loaders) == 2
    targets = fit_module.eval_targets
    assert list(targets) == fit_module.target_names
    for loader, (name, dataset) in zip(loaders, fit_module.eval_sets.items(), strict=True):
        batches = list(loader)
        assert set(batches[0]) == {"image", "index", "target"}
        assert batches[0]["image"].shape[1:] == (3, HEIGHT, WIDTH)
        assert {t for b in batches for t in b["target"]} == {name}
        index = torch.cat([b["index"] for b in batches])
        assert sorted(index.tolist()) == list(range(len(dataset)))
        # Test sets keep the dataset's own pids (distractors 0 included), not training labels.
        target = targets[name]
        assert target.num_query == dataset.num_query > 0
        assert target.pids.tolist() == [s.pid for s in dataset.samples]
        assert target.camids.tolist() == [s.camid for s in dataset.samples]
    # Validation evaluates the same targets with the same (unpadded) shards.
    val = fit_module.val_dataloader()
    assert [v.dataset for v in val] == [t.dataset for t in loaders]
    assert [list(v.sampler) for v in val] == [list(range(len(t.dataset))) for t in loaders]


def test_state_dict_restores_sampler_into_next_train_dataloader(street, studio) -> None:
    first = make_module([street, studio], [street])
    assert first.state_dict() == {}  # nothing to save before a train loader exists
    first.setup("fit")
    loader = first.train_dataloader()
    loader.sampler.set_epoch(2)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = first.state_dict()
    assert state["sampler"] == {"epoch": 2, "seed": 0, "position": 3 * BATCH}
    rest = list(iterator)

    second = make_module([street, studio], [street])
    second.setup("fit")
    second.load_state_dict(state)
    # Resumed in epoch 2, whose loader the state is applied to.
    second.trainer = SimpleNamespace(current_epoch=2, lightning_module=None)
    resumed = list(second.train_dataloader())
    assert len(resumed) == len(rest) > 0
    for a, b in zip(rest, resumed, strict=True):
        assert torch.equal(a["index"], b["index"])
        # Same (epoch, rank, position) tags, hence the same augmentations.
        assert torch.equal(a["image"], b["image"])

    # A fresh module without the state starts the epoch from the beginning instead.
    third = make_module([street, studio], [street])
    third.setup("fit")
    fresh = third.train_dataloader()
    fresh.sampler.set_epoch(2)
    assert len(list(fresh)) == len(rest) + 3


# ----------------------------------------------------------------- datasets and samplers
@pytest.fixture(scope="module")
def train_set(street) -> TrainDataset:
    samples = street.load().train[:18]  # three identities
    return TrainDataset(samples, [s.pid for s in samples], train_transform(), seed=7)


def test_train_dataset_same_key_same_augmentation(train_set: TrainDataset) -> None:
    first = train_set[(1, 0, 5, 3)]
    torch.rand(100)  # unrelated use of the global RNG in between
    _ = train_set[(1, 0, 6, 2)]
    second = train_set[(1, 0, 5, 3)]
    assert torch.equal(first["image"], second["image"])
    assert first["index"] == 3
    assert first["pid"] == train_set.labels[3]
    assert first["camid"] == train_set.samples[3].camid


def test_train_dataset_different_draws_differ(train_set: TrainDataset) -> None:
    images = [train_set[(0, 0, position, 3)]["image"] for position in range(6)]
    for i in range(len(images)):
        for j in range(i):
            assert not torch.equal(images[i], images[j]), (i, j)
    base = train_set[(0, 0, 0, 3)]["image"]
    assert not torch.equal(base, train_set[(1, 0, 0, 3)]["image"])  # other epoch
    assert not torch.equal(base, train_set[(0, 1, 0, 3)]["image"])  # other rank
    other_seed = TrainDataset(train_set.samples, train_set.labels, train_set.transform, seed=8)
    assert not torch.equal(base, other_seed[(0, 0, 0, 3)]["image"])


def test_train_dataset_rejects_label_count_mismatch(train_set: TrainDataset) -> None:
    with pytest.raises(ValueError, match="labels"):
        TrainDataset(train_set.samples, train_set.labels[:-1], train_set.transform)


def test_train_dataset_items_carry_their_source_and_extra_fields(train_set) -> None:
    def camera(sample: Sample) -> torch.Tensor:
        return torch.tensor([sample.camid])

    sources = [i % 2 for i in range(len(train_set))]
    fields = [{"cam": camera}, {"cam": lambda sample: torch.tensor([-1])}]
    dataset = TrainDataset(
        train_set.samples, train_set.labels, eval_transform(), 0, sources, fields
    )
    assert dataset[2]["source"] == 0 and dataset[2]["cam"].tolist() == [train_set.samples[2].camid]
    assert dataset[3]["source"] == 1 and dataset[3]["cam"].tolist() == [-1]
    assert "cam" not in train_set[0] and train_set[0]["source"] == 0
    with pytest.raises(ValueError, match="sources"):
        TrainDataset(train_set.samples, train_set.labels, eval_transform(), 0, sources[:-1])
    with pytest.raises(ValueError, match="same extra fields"):
        TrainDataset(
            train_set.samples, train_set.labels, eval_transform(), 0, sources, [fields[0], {}]
        )
    with pytest.raises(ValueError, match="covers 1 sources"):
        TrainDataset(train_set.samples, train_set.labels, eval_transform(), 0, sources, fields[:1])


def test_augmentations_do_not_depend_on_the_number_of_workers(train_set: TrainDataset) -> None:
    def images(num_workers: int) -> torch.Tensor:
        sampler = RandomIdentitySampler(train_set.labels, num_instances=2, batch_size=4, seed=1)
        loader = DataLoader(
            train_set, batch_size=4, sampler=EpochTaggedSampler(sampler), num_workers=num_workers
        )
        return torch.cat([b["image"] for b in loader])

    assert len({train_set.labels[i] for i in range(len(train_set))}) == 3
    assert torch.equal(images(0), images(1))


LABELS = np.repeat(np.arange(6), [3, 4, 2, 5, 3, 4]).tolist()


def identity_sampler(**kwargs) -> RandomIdentitySampler:
    return RandomIdentitySampler(LABELS, num_instances=2, batch_size=4, seed=5, **kwargs)


def test_epoch_tagged_sampler_tags_indices_and_forwards_epoch() -> None:
    inner = identity_sampler()
    tagged = EpochTaggedSampler(inner)
    expected = identity_sampler().rank_indices(0).tolist()
    assert len(tagged) == len(inner) == len(expected)
    assert list(tagged) == [(0, 0, p, i) for p, i in enumerate(expected)]

    tagged.set_epoch(3)
    assert inner.epoch == 3
    expected3 = identity_sampler().rank_indices(3).tolist()
    assert expected3 != expected
    assert list(tagged) == [(3, 0, p, i) for p, i in enumerate(expected3)]

    rank1 = EpochTaggedSampler(identity_sampler(num_replicas=2, rank=1))
    reference = identity_sampler(num_replicas=2, rank=1).rank_indices(0).tolist()
    assert list(rank1) == [(0, 1, p, i) for p, i in enumerate(reference)]


def test_epoch_tagged_sampler_resumes_mid_epoch() -> None:
    tagged = EpochTaggedSampler(identity_sampler())
    tagged.set_epoch(1)
    iterator = iter(tagged)
    head = [next(iterator) for _ in range(5)]
    state = tagged.state_dict()
    assert state == {"epoch": 1, "seed": 5, "position": 5}
    tail = list(iterator)

    resumed = EpochTaggedSampler(identity_sampler())
    resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 1
    items = list(resumed)
    assert items == tail
    assert [p for _, _, p, _ in items] == list(range(5, len(tagged)))
    whole = EpochTaggedSampler(identity_sampler())
    whole.set_epoch(1)
    assert head + items == list(whole)


@pytest.mark.parametrize(
    ("length", "replicas", "expected"),
    [
        (10, 3, [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]),
        (9, 2, [[0, 2, 4, 6, 8], [1, 3, 5, 7]]),
        (2, 3, [[0], [1], []]),
        (5, 1, [[0, 1, 2, 3, 4]]),
    ],
)
def test_shard_sampler_strides_without_padding(length, replicas, expected) -> None:
    shards = [ShardSampler(length, replicas, rank) for rank in range(replicas)]
    assert [list(s) for s in shards] == expected
    assert [len(s) for s in shards] == [len(e) for e in expected]
    assert sorted(i for s in shards for i in s) == list(range(length))


def test_read_image_decodes_rgb_and_names_corrupt_files(tiny_street: Path, tmp_path: Path) -> None:
    good = sorted((tiny_street / "bounding_box_train").glob("*.jpg"))[0]
    image = read_image(str(good))
    assert image.mode == "RGB"
    assert image.size == (64, 128)

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(UnreadableImageError, match="garbage.jpg") as error:
        read_image(str(garbage))
    assert str(garbage) in str(error.value)

    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match="truncated.jpg"):
        read_image(str(truncated))

    # Datasets surface the same error, naming the file.
    bad = Sample(path=str(garbage), pid=1, camid=0, dataset="x")
    with pytest.raises(UnreadableImageError, match="garbage.jpg"):
        EvalDataset([bad], [], eval_transform())[0]


def test_state_dict_counts_trained_batches_not_prefetched_ones(street, studio) -> None:
    module = make_module([street, studio], [street], num_workers=2)
    module.setup("fit")
    loader = module.train_dataloader()
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    assert loader.sampler.state_dict()["position"] > 3 * BATCH  # the workers ran ahead
    # Saved at the 3rd batch's end: Lightning counts it completed only after that hook.
    progress = SimpleNamespace(current=SimpleNamespace(processed=3, completed=2))
    module.trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
    )
    assert module.state_dict()["sampler"]["position"] == 3 * BATCH
    del iterator


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_sampler_state_resumes_its_own_epoch_only(street, studio, num_workers: int) -> None:
    module = make_module([street, studio], [street], num_workers=num_workers)
    module.setup("fit")
    module.trainer = SimpleNamespace(current_epoch=1, lightning_module=None)
    epoch_1 = [batch["index"] for batch in module.train_dataloader()]
    # Saved at the end of epoch 0; resuming builds epoch 1's loader, which Lightning iterates
    # (its workers fetch) before it sets the epoch.
    module.load_state_dict({"sampler": {"epoch": 0, "seed": 0, "position": len(epoch_1) * BATCH}})
    loader = module.train_dataloader()
    assert loader.sampler.sampler.epoch == 1
    assert all(torch.equal(a["index"], b) for a, b in zip(loader, epoch_1, strict=True))
    # Saved mid-epoch 1, after two batches: the rest of epoch 1.
    module.load_state_dict({"sampler": {"epoch": 1, "seed": 0, "position": 2 * BATCH}})
    rest = [batch["index"] for batch in module.train_dataloader()]
    assert len(rest) == len(epoch_1) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, epoch_1[2:], strict=True))


def test_state_dict_keeps_a_pending_state(street, studio) -> None:
    module = make_module([street, studio], [street])
    module.load_state_dict({"sampler": {"epoch": 1, "seed": 0, "position": 8}})
    assert module.state_dict() == {"sampler": {"epoch": 1, "seed": 0, "position": 8}}


def test_loading_does_not_reset_the_global_rng(street, studio) -> None:
    module = make_module([street, studio], [street])
    module.setup("fit")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    module.train_set[(0, 0, 0, 0)]
    assert torch.equal(torch.rand(3), expected)


def test_graph_sampler_option_yields_whole_class_groups_and_reaches_the_method(street) -> None:
    from functools import partial

    from reidgen.data.samplers.graph import GraphSampler

    module = make_module([street], [street], sampler=partial(GraphSampler))
    module.setup("fit")
    handed: list = []

    class Method(ReIDMethod):
        def configure_train_sampler(self, sampler, datamodule) -> None:
            handed.append((sampler, datamodule))
            # a graph from the labels alone: class c's neighbours are c+1, c+2, ...
            p = sampler.num_classes
            sampler.set_graph(
                torch.tensor([[(c + j) % p for j in range(1, BATCH // K)] for c in range(p)])
            )

    module.trainer = SimpleNamespace(current_epoch=0, lightning_module=Method(num_classes=12))
    loader = module.train_dataloader()
    module.trainer = None
    assert handed and handed[0][1] is module and isinstance(handed[0][0], GraphSampler)
    batches = list(loader)
    assert len(batches) == len(loader) == module.num_classes  # one batch per anchor class
    anchors = []
    for batch in batches:
        labels = check_pk_batch(batch, module.train_set)
        anchors.append(labels[0])
        p = module.num_classes
        assert labels == [(labels[0] + j) % p for j in range(BATCH // K)]
    assert sorted(anchors) == list(range(module.num_classes))


def test_custom_sampler_and_domain_balance_are_exclusive(street) -> None:
    with pytest.raises(ValueError, match="domain_balanced"):
        make_module([street], [street], sampler=RandomIdentitySampler, domain_balanced=True)


def test_train_images_reads_chosen_training_images_with_the_test_transform(fit_module) -> None:
    indices = [5, 0, 3]
    batch = next(iter(fit_module.train_images(indices)))
    expected = torch.stack(
        [eval_transform()(read_image(fit_module.train_set.samples[i].path)) for i in indices]
    )
    torch.testing.assert_close(batch["image"], expected)
    assert batch["index"].tolist() == [0, 1, 2]
