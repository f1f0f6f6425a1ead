"""Greedy and beam search (tinygrad_seq/nn/decoding.py) on toy step functions whose best outputs are known.

The toy decoder is a second-order Markov chain per batch row: log P(y_t | y_{t-2}, y_{t-1}) read
from a table, with y_{t-2} and the row carried in the state, so a wrong reordering of the state
gives wrong results. The oracle scores every possible output exhaustively.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_seq as tg
from tinygrad_seq.nn.decoding import beam_search, greedy_decode, tile_beams

END = 0


class Chain:
    """A second-order Markov chain over V tokens (END = 0) plus a start token V, one table per batch row."""

    def __init__(self, log_table):
        self.log_table = log_table  # (B, V + 1, V + 1, V): row, token before last, last token -> next
        self.B, self.start, self.V = log_table.shape[0], log_table.shape[1] - 1, log_table.shape[3]
        self.calls = 0

    @classmethod
    def random(cls, B, V, seed):
        rng = np.random.default_rng(seed)
        return cls(np.log(rng.dirichlet(np.ones(V), size=(B, V + 1, V + 1)).clip(1e-6)))

    @classmethod
    def first_order(cls, rows):
        """rows[prev] = P(next | prev) for prev in 0..V (V: the start), the same for every batch row."""
        p = np.array(rows, dtype=np.float64)
        return cls(np.log(np.broadcast_to(p[None, None], (1, len(rows)) + p.shape)))

    def initial_state(self, rows=None):
        rows = np.arange(self.B) if rows is None else np.asarray(rows)
        return tg.Tensor(np.full(len(rows), self.start)), tg.Tensor(rows)

    def step(self, tokens, state):
        self.calls += 1
        before, rows = state
        last = tokens.numpy()
        return tg.Tensor(self.log_table[rows.numpy(), before.numpy(), last]), (tg.Tensor(last), rows)

    def ranked(self, row, max_length, penalty):
        """Every possible output of a row (ending in END, or max_length tokens long), best first."""
        found = []
        for n in range(1, max_length + 1):
            for seq in itertools.product(range(self.V), repeat=n):
                if END in seq[:-1] or (n < max_length and seq[-1] != END):
                    continue
                total, before, last = 0.0, self.start, self.start
                for token in seq:
                    total += self.log_table[row, before, last, token]
                    before, last = last, token
                found.append((total / penalty(n), list(seq)))
        return sorted(found, key=lambda f: -f[0])


def gnmt(alpha):
    return lambda n: ((5 + n) / 6) ** alpha


@settings(max_examples=20)
@given(V=st.integers(2, 3), max_length=st.integers(1, 4), alpha=st.sampled_from([0.0, 0.7, 3.0]),
       n_best=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_a_beam_as_wide_as_every_output_is_exhaustive_search(V, max_length, alpha, n_best, seed):
    if V ** max_length > 81:
        max_length -= 1
    chain = Chain.random(2, V, seed)
    width = V ** max_length
    n_best = min(n_best, width)
    sequences, scores = beam_search(chain.step, chain.initial_state(), chain.start, END, width, max_length, alpha,
                                    n_best)
    for b in range(2):
        expected = chain.ranked(b, max_length, gnmt(alpha))[:n_best]
        assert sequences[b] == [seq for _, seq in expected]
        np.testing.assert_allclose(scores[b], [score for score, _ in expected], rtol=1e-12)


def test_beam_finds_the_best_output_where_greedy_does_not_and_stops_early():
    # from the start: a is likelier than b, but after a every token is unlikely, while b ends surely
    chain = Chain.first_order([[0.10, 0.45, 0.45],    # after END (never read)
                               [0.34, 0.33, 0.33],    # after a
                               [0.90, 0.05, 0.05],    # after b
                               [0.01, 0.55, 0.44]])   # after the start
    greedy, greedy_scores = greedy_decode(chain.step, chain.initial_state(), chain.start, END, 5)
    assert greedy == [[1, 0]] and np.isclose(greedy_scores[0], np.log(0.55 * 0.34))
    chain.calls = 0
    sequences, scores = beam_search(chain.step, chain.initial_state(), chain.start, END, 2, 5)
    assert sequences == [[[2, 0]]] and np.isclose(scores[0][0], np.log(0.44 * 0.9))
    assert chain.ranked(0, 5, gnmt(0))[0][1] == [2, 0]
    assert chain.calls == 2  # no open hypothesis could beat b, END after two steps


def test_every_ending_passed_while_filling_the_beam_is_a_finished_hypothesis():
    # step 2 ranks a END (0.45), b a (0.225), b END (0.18), b b (0.045): b END, passed while filling a beam
    # of two, is the second best output (after b a, END is unlikely)
    p = np.full((1, 4, 4, 3), 1 / 3)
    p[0, 3, 3], p[0, 3, 1], p[0, 3, 2], p[0, 2, 1] = [0.05, 0.5, 0.45], [0.9, 0.05, 0.05], [0.4, 0.5, 0.1], [0.1, 0.45, 0.45]
    chain = Chain(np.log(p))
    sequences, scores = beam_search(chain.step, chain.initial_state(), chain.start, END, 2, 3, n_best=2)
    assert sequences == [[[1, 0], [2, 0]]] == [[seq for _, seq in chain.ranked(0, 3, gnmt(0))[:2]]]
    np.testing.assert_allclose(scores[0], np.log([0.45, 0.18]), rtol=1e-12)


def test_width_one_is_greedy_even_where_ending_at_once_was_better():
    chain = Chain.first_order([[0.4, 0.6], [0.34, 0.66], [0.4, 0.6]])  # END now: 0.4; a, ..., END: at most 0.34 * 0.6
    greedy, _ = greedy_decode(chain.step, chain.initial_state(), chain.start, END, 4)
    sequences, _ = beam_search(chain.step, chain.initial_state(), chain.start, END, 1, 4)
    assert greedy == [[1, 1, 1, 1]] and sequences == [[[1, 1, 1, 1]]]
    assert chain.ranked(0, 4, gnmt(0))[0][1] == [0]


@pytest.mark.parametrize("seed", range(4))
def test_width_one_is_greedy(seed):
    chain = Chain.random(3, 4, seed)
    greedy, greedy_scores = greedy_decode(chain.step, chain.initial_state(), chain.start, END, 6)
    sequences, scores = beam_search(chain.step, chain.initial_state(), chain.start, END, 1, 6)
    assert [s[0] for s in sequences] == greedy
    np.testing.assert_allclose([s[0] for s in scores], greedy_scores, rtol=1e-12)


def test_length_penalty():
    # END now (0.4) against a, a, a (0.6 * 0.7 * 0.7 = 0.294, cut at max_length): the plain total prefers
    # the short output; GNMT's penalty with alpha = 2, or the average per token, the long one
    chain = Chain.first_order([[0.5, 0.5], [0.3, 0.7], [0.4, 0.6]])
    run = lambda penalty: beam_search(chain.step, chain.initial_state(), chain.start, END, 4, 3, penalty)
    assert run(0.0) == ([[[0]]], [[np.log(0.4)]])
    sequences, scores = run(2.0)
    assert sequences == [[[1, 1, 1]]] and np.isclose(scores[0][0], np.log(0.294) / (8 / 6) ** 2)
    sequences, scores = run(lambda n: n)
    assert sequences == [[[1, 1, 1]]] and np.isclose(scores[0][0], np.log(0.294) / 3)
    # the search may stop only when no open output can win at any length up to max_length: here a
    # finished END (0.52) beats the open a (0.48) at step 1, but a, a, a, a (0.41) wins with alpha = 3
    chain = Chain.first_order([[0.5, 0.5], [0.05, 0.95], [0.52, 0.48]])
    sequences, _ = beam_search(chain.step, chain.initial_state(), chain.start, END, 2, 4, 3.0)
    assert sequences == [[[1, 1, 1, 1]]] == [[chain.ranked(0, 4, gnmt(3.0))[0][1]]]


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_a_larger_alpha_never_prefers_a_shorter_output(seed):
    chain = Chain.random(2, 3, seed)
    lengths = []
    for alpha in (0.0, 0.5, 1.0, 2.0, 5.0):
        sequences, _ = beam_search(chain.step, chain.initial_state(), chain.start, END, 27, 3, alpha)
        lengths.append([len(s[0]) for s in sequences])
    assert all(a <= b for earlier, later in zip(lengths, lengths[1:]) for a, b in zip(earlier, later)), lengths


def test_batch_rows_are_independent():
    chain = Chain.random(4, 5, 11)
    together = beam_search(chain.step, chain.initial_state(), chain.start, END, 3, 6, 0.6, n_best=2)
    for b in range(4):
        alone = beam_search(chain.step, chain.initial_state([b]), chain.start, END, 3, 6, 0.6, n_best=2)
        assert alone[0] == [together[0][b]]
        np.testing.assert_allclose(alone[1][0], together[1][b], rtol=1e-12)


def test_tile_beams_and_errors():
    x = tg.Tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(tile_beams(x, 3).numpy(), [[1, 2]] * 3 + [[3, 4]] * 3)
    chain = Chain.random(1, 3, 0)
    with pytest.raises(ValueError, match="beam_width >= 1"):
        beam_search(chain.step, chain.initial_state(), chain.start, END, 2, 5, n_best=3)
    with pytest.raises(ValueError, match="log-probabilities of shape \\(2, vocabulary\\)"):
        beam_search(lambda tokens, state: (tg.zeros(1, 3), state), chain.initial_state(), chain.start, END, 2, 5)
    with pytest.raises(ValueError, match="same first \\(batch\\) axis"):
        greedy_decode(chain.step, (tg.zeros(2), tg.zeros(3)), chain.start, END, 5)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        beam_search(chain.step, chain.initial_state(), chain.start, END, 2, 5, length_penalty=-1.0)
