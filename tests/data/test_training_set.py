"""The training pool, the per-epoch label rule, TrainingSet, and the data module's per-epoch
training set (hook, validation, resume, extra fields), on tiny SynthPerson data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reidgen.data.datamodule import ReIDDataModule
from reidgen.data.dataset import read_image
from reidgen.data.sample import Sample
from reidgen.data.sources import SynthPersonSource, synthperson_structure
from reidgen.data.training_set import (
    TrainingSet,
    TrainingSource,
    check_assignment,
    epoch_labels,
)
from reidgen.data.transforms import build_transforms
from reidgen.methods.base import ReIDMethod

HEIGHT, WIDTH = 32, 16
BATCH, K = 8, 2
STUDIO, STREET = "synth_studio", "synth_street"


def fake_source(name: str, own: list[int], labelled: bool = True) -> TrainingSource:
    samples = tuple(
        Sample(path=f"{name}/{i}.jpg", pid=i, camid=0, dataset=name, index=i)
        for i in range(len(own))
    )
    return TrainingSource(name, labelled, samples, np.array(own, dtype=np.int64))


POOL = [
    fake_source("a", [0, 1, 1, 2]),
    fake_source("b", [-1] * 4, labelled=False),
    fake_source("c", [-1] * 2, labelled=False),
]


# --------------------------------------------------------------------------- label rule
def test_sources_not_relabelled_keep_their_own_labels() -> None:
    labels = epoch_labels(POOL, {}, num_classes=3)
    assert [lab.tolist() for lab in labels] == [[0, 1, 1, 2], [-1] * 4, [-1, -1]]
    labels[0][0] = 7  # a copy: the pool is not changed
    assert POOL[0].own_labels[0] == 0


def test_relabelled_sources_get_dense_labels_after_the_labelled_identities() -> None:
    assigned = check_assignment({"c": [0, 1], "b": [5, -1, 2, 5]}, POOL)
    assert list(assigned) == ["b", "c"]  # pool order, whatever the mapping's order
    labels = epoch_labels(POOL, assigned, num_classes=3)
    # Sorted (position, label) pairs: (1, 2) -> 3, (1, 5) -> 4, (2, 0) -> 5, (2, 1) -> 6.
    assert [lab.tolist() for lab in labels] == [[0, 1, 1, 2], [4, -1, 3, 4], [5, 6]]
    # A labelled source may be relabelled too; its labels never meet the identities 0..2.
    labels = epoch_labels(POOL, check_assignment({"a": [1, 1, -1, 0]}, POOL), num_classes=3)
    assert [lab.tolist() for lab in labels] == [[4, 4, -1, 3], [-1] * 4, [-1, -1]]


def test_check_assignment_accepts_tensors_and_none() -> None:
    assert check_assignment(None, POOL) == {}
    checked = check_assignment({"c": torch.tensor([3, -1])}, POOL)
    assert checked["c"].dtype == np.int64 and checked["c"].tolist() == [3, -1]


@pytest.mark.parametrize(
    ("returned", "error", "message"),
    [
        ({"nope": [0, 1]}, ValueError, r"\['nope'\].*training sources are \['a', 'b', 'c'\]"),
        ({"b": [0, 1, 2]}, ValueError, r"3 labels for source 'b'.*one per image.*: 4"),
        ({"c": [0, -2]}, ValueError, r"source 'c' must be >= -1.*got -2"),
        ({"c": [0.5, 1.0]}, ValueError, r"source 'c' must be a 1-D sequence of integers"),
        ({"c": [[0, 1]]}, ValueError, r"source 'c' must be a 1-D sequence of integers"),
        ([0, 1], TypeError, r"\{source name: labels\} or None, got list"),
    ],
)
def test_check_assignment_names_the_source_and_what_was_expected(returned, error, message) -> None:
    with pytest.raises(error, match=message):
        check_assignment(returned, POOL)


# --------------------------------------------------------------------------- data module
def make_module(sources, targets, **kwargs) -> ReIDDataModule:
    options = {"batch_size": BATCH, "num_instances": K, "eval_batch_size": 16, "num_workers": 0}
    options.update(kwargs)
    return ReIDDataModule(
        sources,
        targets,
        build_transforms(HEIGHT, WIDTH, train=True, pad=2),
        build_transforms(HEIGHT, WIDTH, train=False),
        **options,
    )


@pytest.fixture(scope="module")
def catalogue(tiny_street: Path, tiny_studio: Path, synth_data_dir: Path) -> dict:
    return {
        name: SynthPersonSource(domain, "tiny", data_dir=str(synth_data_dir))
        for name, domain in ((STUDIO, "studio"), (STREET, "street"))
    }


def mixed_module(catalogue: dict, **kwargs) -> ReIDDataModule:
    """Labelled studio, unlabelled street."""
    module = make_module(
        [STUDIO, STREET], [STUDIO], catalogue=catalogue, unlabelled=[STREET], **kwargs
    )
    module.setup("fit")
    return module


def rule(epoch: int, pids: list[int]) -> list[int]:
    """The test's pseudo labels: pid modulo (epoch + 2); pids divisible by 4 left out."""
    return [-1 if pid % 4 == 0 else pid % (epoch + 2) for pid in pids]


class Relabeller(ReIDMethod):
    """Labels the street source by :func:`rule` and records what it was shown."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.calls: list[tuple[int, TrainingSet]] = []

    def assign_training_labels(self, epoch, training_set):
        self.calls.append((epoch, training_set))
        return {STREET: rule(epoch, [s.pid for s in training_set.samples(STREET)])}


def attach(module: ReIDDataModule, method: ReIDMethod | None, epoch: int, reload: int = 1):
    module.trainer = SimpleNamespace(
        current_epoch=epoch, lightning_module=method, reload_dataloaders_every_n_epochs=reload
    )


def labels_by_path(module: ReIDDataModule) -> dict[str, int]:
    return {
        s.path: y for s, y in zip(module.train_set.samples, module.train_set.labels, strict=True)
    }


def test_unlabelled_sources_are_in_the_pool_but_not_in_the_batches(catalogue) -> None:
    module = mixed_module(catalogue)
    studio, street = catalogue[STUDIO].load(), catalogue[STREET].load()
    assert module.num_classes == 12
    assert [(s.name, s.labelled) for s in module.pool] == [(STUDIO, True), (STREET, False)]
    assert [s.path for s in module.pool[1].samples] == [s.path for s in street.train]
    assert {s.domain for s in module.pool[1].samples} == {1}
    assert set(module.pool[1].own_labels.tolist()) == {-1}
    # The default training set: the labelled source alone, its identities as before.
    assert [s.path for s in module.train_set.samples] == [s.path for s in studio.train]
    assert module.train_set.labels == [module.label_of[(STUDIO, s.pid)] for s in studio.train]
    assert set(module.train_set.sources) == {0}
    # Without a trainer (no method) the loader trains on the same set.
    batch = next(iter(module.train_dataloader()))
    assert set(batch["source"].tolist()) == {0} and max(batch["pid"].tolist()) < 12


def test_duplicate_training_source_names_are_refused(catalogue) -> None:
    module = make_module([STREET, STREET], [STREET], catalogue=catalogue)
    with pytest.raises(ValueError, match="distinct names"):
        module.setup("fit")


def test_hook_relabels_the_unlabelled_source_every_epoch(catalogue) -> None:
    module = mixed_module(catalogue)
    method = Relabeller(module.num_classes)
    street = catalogue[STREET].load().train
    studio_labels = {
        s.path: module.label_of[(STUDIO, s.pid)] for s in catalogue[STUDIO].load().train
    }
    previous = None
    for epoch in (0, 1):
        attach(module, method, epoch)
        loader = module.train_dataloader()
        assert method.calls[-1][0] == epoch and len(method.calls) == epoch + 1
        pseudo = rule(epoch, [s.pid for s in street])
        distinct = sorted(set(pseudo) - {-1})
        expected = {
            s.path: 12 + distinct.index(y) for s, y in zip(street, pseudo, strict=True) if y != -1
        } | studio_labels
        assert labels_by_path(module) == expected  # -1 images are left out
        assert len(distinct) == epoch + 2
        # What the hook was shown: the pool, and the labels in force (the previous epoch's).
        training_set = method.calls[-1][1]
        assert training_set.epoch == epoch and training_set.num_classes == 12
        assert training_set.names == (STUDIO, STREET) and training_set.labelled == (STUDIO,)
        assert [s.path for s in training_set.samples(STREET)] == [s.path for s in street]
        shown = training_set.labels(STREET).tolist()
        assert shown == ([-1] * len(street) if previous is None else previous)
        previous = [expected.get(s.path, -1) for s in street]
        # Batches carry the epoch's labels, sources and domains.
        for batch in loader:
            for i, pid, source, domain in zip(
                batch["index"].tolist(),
                batch["pid"].tolist(),
                batch["source"].tolist(),
                batch["domain"].tolist(),
                strict=True,
            ):
                sample = module.train_set.samples[i]
                assert pid == expected[sample.path]
                assert source == domain == (0 if sample.dataset == STUDIO else 1)
        # train_images reads the current epoch's set, as the sampler's indices do.
        last = len(module.train_set) - 1
        image = next(iter(module.train_images([last])))["image"][0]
        path = module.train_set.samples[last].path
        torch.testing.assert_close(image, module.test_transform(read_image(path)))


def test_training_set_images_load_a_source_with_the_test_transform(catalogue) -> None:
    module = mixed_module(catalogue)
    method = Relabeller(module.num_classes)
    attach(module, method, 0)
    module.train_dataloader()
    training_set = method.calls[0][1]
    street = training_set.samples(STREET)
    batches = list(training_set.images(STREET))
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(street)))
    assert batches[0]["image"].shape == (16, 3, HEIGHT, WIDTH)
    batch = next(iter(training_set.images(STREET, [7, 2])))
    assert batch["index"].tolist() == [7, 2]
    expected = torch.stack([module.test_transform(read_image(street[i].path)) for i in (7, 2)])
    torch.testing.assert_close(batch["image"], expected)
    with pytest.raises(ValueError, match=r"\[75\] outside source 'synth_street'.*75 images"):
        training_set.images(STREET, [0, 75])
    with pytest.raises(ValueError, match="'nope' is not a training source"):
        training_set.samples("nope")


def test_wrong_labels_fail_naming_the_source(catalogue) -> None:
    module = mixed_module(catalogue)

    class Wrong(ReIDMethod):
        def assign_training_labels(self, epoch, training_set):
            return {STREET: [0, 1]}

    attach(module, Wrong(12), 0)
    with pytest.raises(ValueError, match=r"2 labels for source 'synth_street'.*: 75"):
        module.train_dataloader()


def test_labels_that_leave_nothing_to_train_on_are_refused(catalogue) -> None:
    module = mixed_module(catalogue)

    class Nothing(ReIDMethod):
        def assign_training_labels(self, epoch, training_set):
            return {name: [-1] * len(training_set.samples(name)) for name in training_set.names}

    attach(module, Nothing(12), 0)
    with pytest.raises(ValueError, match="epoch 0 has no training image"):
        module.train_dataloader()


def test_relabelling_needs_a_loader_per_epoch(catalogue) -> None:
    module = mixed_module(catalogue)
    attach(module, Relabeller(12), 0, reload=0)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        module.train_dataloader()


def test_resume_reuses_the_stored_labels_of_the_same_epoch(catalogue) -> None:
    first = mixed_module(catalogue)
    attach(first, Relabeller(12), 3)
    loader = first.train_dataloader()
    batches = list(loader)
    first.trainer = None  # state_dict reads the trained batches from a trainer when there is one
    state = first.state_dict()
    assert state["labels"]["epoch"] == 3
    stored = state["labels"]["assigned"][STREET]
    assert stored.dtype == torch.int64
    assert stored.tolist() == rule(3, [s.pid for s in first.pool[1].samples])

    class Other(Relabeller):
        """Would label differently: the resumed epoch must not ask it."""

        def assign_training_labels(self, epoch, training_set):
            self.calls.append((epoch, training_set))
            return {STREET: [0] * len(training_set.samples(STREET))}

    second = mixed_module(catalogue)
    second.load_state_dict(state)
    method = Other(12)
    attach(second, method, 3)
    resumed = list(second.train_dataloader())
    assert method.calls == []
    assert labels_by_path(second) == labels_by_path(first)
    for a, b in zip(batches, resumed, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["pid"], b["pid"])
    # The next epoch asks the method, showing it the resumed epoch's labels.
    attach(second, method, 4)
    second.train_dataloader()
    assert [epoch for epoch, _ in method.calls] == [4]
    shown = method.calls[0][1].labels(STREET).tolist()
    assert shown == [labels_by_path(first).get(s.path, -1) for s in first.pool[1].samples]
    assert set(second.train_set.labels) == set(range(13))  # all street images in one class 12


def test_stored_labels_of_other_data_are_refused(catalogue) -> None:
    module = mixed_module(catalogue)
    module.load_state_dict(
        {"labels": {"epoch": 0, "assigned": {STREET: torch.zeros(3, dtype=torch.long)}}}
    )
    attach(module, Relabeller(12), 0)
    with pytest.raises(ValueError, match="3 labels for source 'synth_street'"):
        module.train_dataloader()


# --------------------------------------------------------------------------- extra fields
def test_extra_fields_must_be_offered_by_every_training_source(catalogue) -> None:
    class Plain:
        name = "plain"

        def load(self):
            raise AssertionError("checked before loading")

    module = make_module(
        [STUDIO, Plain()], [STUDIO], catalogue=catalogue, extra_fields=["structure"]
    )
    with pytest.raises(ValueError, match="'structure'.*'plain'.*offers: no extra fields"):
        module.setup("fit")
    module = make_module([STUDIO], [STUDIO], catalogue=catalogue, extra_fields=["depth"])
    with pytest.raises(ValueError, match="'depth'.*'synth_studio'.*offers: structure"):
        module.setup("fit")


def test_structure_maps_ride_along_untransformed(catalogue) -> None:
    module = mixed_module(catalogue, extra_fields=["structure"])
    attach(module, Relabeller(12), 0)
    sources = set()
    for batch in module.train_dataloader():
        assert batch["image"].shape == (BATCH, 3, HEIGHT, WIDTH)
        # The generated size, not the transformed one: extra fields skip the image transform.
        assert batch["structure"].shape == (BATCH, 8, 128, 64)
        assert batch["structure"].dtype == torch.uint8
        for i, structure in zip(batch["index"].tolist(), batch["structure"], strict=True):
            assert torch.equal(structure, synthperson_structure(module.train_set.samples[i]))
        sources.update(batch["source"].tolist())
    assert sources == {0, 1}  # the unlabelled source's structure too, once labelled
