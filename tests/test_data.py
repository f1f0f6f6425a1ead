"""Datasets, samplers, collate functions and the DataLoader: every example once per epoch,
deterministic under a seed, a different order each epoch; padding like nn.utils.pad_sequence."""
import collections

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq as tg
from tinygrad_seq import nn
from tinygrad_seq.data import (BatchSampler, BucketBatchSampler, DataLoader, Dataset, PadCollate, RandomSampler,
                               SequentialSampler, TensorDataset, default_collate)


def epoch_indices(loader):
    """The dataset rows one pass over `loader` yields (the dataset's first field is the row number)."""
    return [int(i) for batch in loader for i in batch[0].tolist()]


def numbered(n):
    return TensorDataset(np.arange(n), np.arange(n, dtype=np.float32) * 2)


@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (12, 4, False), (1, 5, False)])
def test_each_example_once_per_epoch_in_a_new_order(n, batch_size, drop_last):
    loader = DataLoader(numbered(n), batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=3)
    epochs = [epoch_indices(loader) for _ in range(4)]
    kept = n - n % batch_size if drop_last else n
    assert len(loader) == (n // batch_size if drop_last else -(-n // batch_size))
    for order in epochs:
        assert len(order) == kept and len(set(order)) == kept and set(order) <= set(range(n))
    if n > 3:
        assert len({tuple(order) for order in epochs}) == 4  # a new order each epoch
    again = DataLoader(numbered(n), batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=3)
    assert [epoch_indices(again) for _ in range(4)] == epochs  # the seed fixes every epoch
    other = DataLoader(numbered(n), batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=4)
    assert n < 4 or epoch_indices(other) != epochs[0]
    again.set_epoch(2)
    assert epoch_indices(again) == epochs[2]  # resume at an epoch


def test_without_a_seed_manual_seed_fixes_the_order_and_rng_state_captures_it():
    loader = DataLoader(numbered(20), batch_size=4, shuffle=True)
    tg.manual_seed(5)
    first = [epoch_indices(loader) for _ in range(2)]
    tg.manual_seed(5)
    assert [epoch_indices(loader) for _ in range(2)] == first
    tg.manual_seed(5)
    epoch_indices(loader)
    state = tg.get_rng_state()
    second = epoch_indices(loader)
    tg.set_rng_state(state)
    assert epoch_indices(loader) == second == first[1]


def test_batches_are_tensors_with_the_datasets_dtypes():
    xb, yb = next(iter(DataLoader(numbered(5), batch_size=2)))
    assert type(xb) is tg.Tensor and xb.dtype == np.int64 and xb.tolist() == [0, 1]
    assert yb.dtype == np.float32 and yb.tolist() == [0.0, 2.0]
    tensors = TensorDataset(tg.arange(6).reshape(3, 2), tg.ones(3))
    xb, yb = next(iter(DataLoader(tensors, batch_size=3)))
    assert xb.shape == (3, 2) and xb.dtype == np.int64 and yb.shape == (3,)


def test_default_collate_nested_structures():
    Pair = collections.namedtuple("Pair", "a b")
    batch = [{"x": np.ones(2, np.float32) * k, "n": k, "f": k / 2, "ok": k > 0, "name": f"s{k}",
              "pair": Pair(np.int32(k), [k, -k]), "t": tg.Tensor([float(k)])} for k in range(3)]
    out = default_collate(batch)
    assert out["x"].shape == (3, 2) and out["x"].dtype == np.float32
    assert out["n"].dtype == np.int64 and out["n"].tolist() == [0, 1, 2]
    assert out["f"].dtype == np.float64 and out["ok"].dtype == np.bool_ and out["name"] == ["s0", "s1", "s2"]
    assert type(out["pair"]) is Pair and out["pair"].a.dtype == np.int32
    assert isinstance(out["pair"].b, list) and out["pair"].b[1].tolist() == [0, -1, -2]
    assert out["t"].shape == (3, 1)
    with pytest.raises(ValueError, match="different shapes .* use collate_fn=PadCollate"):
        default_collate([np.ones(2), np.ones(3)])
    with pytest.raises(ValueError, match="same number of fields"):
        default_collate([(1, 2), (1,)])
    with pytest.raises(TypeError, match="cannot batch examples of type object"):
        default_collate([object()])
    with pytest.raises(ValueError, match="non-empty list"):
        default_collate([])


@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5), batch_first=st.booleans(),
       side=st.sampled_from(["right", "left"]))
def test_pad_collate_matches_pad_sequence(lengths, batch_first, side):
    rng = np.random.default_rng(len(lengths))
    seqs = [rng.standard_normal((n, 3)).astype(np.float32) for n in lengths]
    labels = list(range(len(lengths)))
    padded, got_lengths, got_labels = PadCollate(batch_first=batch_first, padding_value=-1.0, padding_side=side)(
        list(zip(seqs, labels)))
    want = nn.utils.pad_sequence([tg.Tensor(s) for s in seqs], batch_first=batch_first, padding_value=-1.0,
                                 padding_side=side)
    assert padded.shape == want.shape and padded.dtype == np.float32
    np.testing.assert_array_equal(padded.numpy(), want.numpy())
    assert got_lengths.tolist() == lengths and got_lengths.dtype == np.int64 and got_labels.tolist() == labels


def test_pad_collate_fields_plain_sequences_and_a_layer():
    a, b = [1, 2, 3], [4]
    padded, lengths = PadCollate()([np.array(a), np.array(b)])  # plain sequences: (padded, lengths)
    assert padded.tolist() == [[1, 4], [2, 0], [3, 0]] and lengths.tolist() == [3, 1]
    src, src_len, tgt, tgt_len = PadCollate(batch_first=True, pad_fields=(0, 1))(
        [(np.array(a), np.array([7])), (np.array(b), np.array([8, 9]))])
    assert src.tolist() == [[1, 2, 3], [4, 0, 0]] and tgt.tolist() == [[7, 0], [8, 9]]
    assert src_len.tolist() == [3, 1] and tgt_len.tolist() == [1, 2]
    x, lengths = PadCollate(batch_first=True)([tg.randn(4, 2), tg.randn(2, 2)])
    out, h = nn.GRU(2, 3, batch_first=True)(x, lengths=lengths)
    assert out.shape == (2, 4, 3) and np.all(out.numpy()[1, 2:] == 0)
    with pytest.raises(ValueError, match="one trailing shape"):
        PadCollate()([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="padding_side"):
        PadCollate(padding_side="middle")


@given(lengths=st.lists(st.integers(1, 40), min_size=0, max_size=120), batch_size=st.integers(1, 9),
       pool_batches=st.integers(1, 5), drop_last=st.booleans(), seed=st.integers(0, 3))
def test_bucket_sampler_covers_every_index_once(lengths, batch_size, pool_batches, drop_last, seed):
    sampler = BucketBatchSampler(lengths, batch_size, pool_batches=pool_batches, drop_last=drop_last, seed=seed)
    for _ in range(2):
        batches = list(sampler)
        flat = [i for batch in batches for i in batch]
        assert len(batches) == len(sampler)
        assert len(flat) == len(set(flat))
        if drop_last:
            assert all(len(b) == batch_size for b in batches) and len(flat) == len(lengths) // batch_size * batch_size
        else:
            assert sorted(flat) == list(range(len(lengths)))
            assert sum(len(b) < batch_size for b in batches) <= 1


def test_bucket_sampler_cuts_padding_and_is_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=2000).tolist()
    bucketed = BucketBatchSampler(lengths, 32, seed=1)
    random = BatchSampler(RandomSampler(lengths, seed=1), 32)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    first = list(bucketed)
    assert padding(first) < 0.1 * padding(list(random))  # random batches pad about half of every batch
    second = list(bucketed)
    assert first != second  # new batches and a new batch order each epoch
    assert sorted(map(sorted, first)) != sorted(map(sorted, second))
    again = BucketBatchSampler(lengths, 32, seed=1)
    assert list(again) == first and list(again) == second
    ordered = list(BucketBatchSampler(lengths, 32, shuffle=False))
    flat = [lengths[i] for b in ordered for i in b]
    assert flat == sorted(flat) and ordered == list(BucketBatchSampler(lengths, 32, shuffle=False))
    loader = DataLoader(TensorDataset(np.arange(2000)), batch_sampler=BucketBatchSampler(lengths, 32, seed=1))
    loader.set_epoch(1)
    assert [b[0].tolist() for b in loader] == second


def test_samplers_and_batch_size_none():
    data = numbered(5)
    assert list(SequentialSampler(data)) == [0, 1, 2, 3, 4] and len(SequentialSampler(data)) == 5
    assert sorted(RandomSampler(data, seed=0)) == [0, 1, 2, 3, 4]
    assert list(BatchSampler(range(5), 2, drop_last=True)) == [[0, 1], [2, 3]]
    single = list(DataLoader(data, batch_size=None))
    assert len(single) == 5 and int(single[3][0]) == 3
    sampled = DataLoader(data, batch_size=2, sampler=[4, 0, 2])
    assert [b[0].tolist() for b in sampled] == [[4, 0], [2]] and len(sampled) == 2


class Squares(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"x": i, "y": i * i}


def test_a_user_dataset_and_a_custom_collate():
    loader = DataLoader(Squares(), batch_size=3, collate_fn=lambda batch: [e["y"] for e in batch])
    assert list(loader) == [[0, 1, 4], [9]]
    assert next(iter(DataLoader(Squares(), batch_size=4)))["y"].tolist() == [0, 1, 4, 9]


def test_errors():
    data = numbered(4)
    with pytest.raises(ValueError, match="mutually exclusive with batch_size"):
        DataLoader(data, batch_size=2, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(data, shuffle=True, sampler=[0, 1])
    with pytest.raises(ValueError, match="seed only applies with shuffle=True"):
        DataLoader(data, seed=1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(data, batch_size=0)
    with pytest.raises(TypeError, match="expected a dataset"):
        DataLoader(5)
    with pytest.raises(ValueError, match="same first dimension"):
        TensorDataset(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="seed must be an integer"):
        RandomSampler(data, seed=1.5)
    with pytest.raises(TypeError, match="has set_epoch"):
        DataLoader(data, batch_sampler=[[0, 1]]).set_epoch(1)
    with pytest.raises(NotImplementedError, match="must define __getitem__"):
        Dataset()[0]


def test_utils_data_alias():
    from tinygrad_seq.utils.data import DataLoader as Aliased
    assert Aliased is DataLoader and tg.utils.data.PadCollate is PadCollate


def test_batches_stay_on_the_examples_device(device):
    seqs = [tg.randn(n, 2, device=device) for n in (3, 1, 2)]
    padded, lengths = PadCollate()(seqs)
    assert padded.device == seqs[0].device and padded.shape == (3, 3, 2) and lengths.device == "cpu"
    want = nn.utils.pad_sequence(seqs)
    np.testing.assert_array_equal(padded.numpy(), want.numpy())
    stacked = default_collate([tg.randn(2, device=device) for _ in range(4)])
    assert stacked.device == seqs[0].device and stacked.shape == (4, 2)
    raw = default_collate([s.array[:1] for s in seqs])
    assert raw.device == seqs[0].device and raw.shape == (3, 1, 2)
