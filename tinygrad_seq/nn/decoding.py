"""Decoding a sequence from a step function: greedy search and beam search.

Both take any decoder through one function, step(tokens, state) -> (log_probs, state): tokens
is an integer Tensor (N,) of the previous tokens, state a Tensor or a tuple of Tensors whose
first axis is N, and log_probs (N, V) the log-probabilities of the next token (log_softmax of
the decoder's logits). Both run under no_grad and return Python lists of token ids, without
the start token and with the end token when the hypothesis produced one.

Beam search keeps beam_width open hypotheses per batch row as rows b * K + k of one (B * K)
batch (`tile_beams` lays out anything the step function reads in the same way), extends
each by every token, keeps the K best, and reorders the state to follow them (OpenNMT-py,
fairseq). Hypotheses are ranked by their total log-probability divided by a length penalty:
GNMT's lp(n) = ((5 + n) / 6) ** alpha (Wu et al. 2016) for length_penalty=alpha (0: the
plain total; large alpha favours longer outputs), or any positive non-decreasing function
of n given instead (`lambda n: n` ranks by the average log-probability per token). The
length n counts the generated tokens, the end token included.
"""
import math

from ..engine import backend
from ..engine.function import no_grad
from ..tensors import Tensor


def tile_beams(x, beam_width):
    """x (B, ...) -> (B * beam_width, ...), row b repeated beam_width times in place: the layout of beam_search."""
    rows = backend.namespace(x.device).arange(x.shape[0]).repeat(beam_width)
    return x[rows]


def _reorder(state, rows):
    """Every item of a state (a Tensor or a tuple) with its rows taken from `rows` (a backend array)."""
    return tuple(s[rows] for s in state) if isinstance(state, tuple) else state[rows]


def _batch_size(op, state):
    items = state if isinstance(state, tuple) else (state,)
    if not items or not all(isinstance(s, Tensor) and s.ndim >= 1 for s in items) or \
            len({s.shape[0] for s in items}) != 1:
        raise ValueError(f"{op}: the state must be a Tensor or a tuple of Tensors with the same first (batch) axis, "
                         f"got {[getattr(s, 'shape', type(s).__name__) for s in items]}")
    return items[0].shape[0], items[0].device


def _log_probs(op, log_probs, rows):
    if not isinstance(log_probs, Tensor) or log_probs.ndim != 2 or log_probs.shape[0] != rows:
        got = log_probs.shape if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise ValueError(f"{op}: the step function must return log-probabilities of shape ({rows}, vocabulary), "
                         f"got {got}")
    return log_probs


@no_grad()
def greedy_decode(step, state, start_token, end_token, max_length):
    """Feed back the most likely token until end_token or max_length tokens.

    Returns (sequences, scores): per batch row, its tokens and their total log-probability.
    """
    B, device = _batch_size("greedy_decode", state)
    tokens, sequences, scores = [start_token] * B, [[] for _ in range(B)], [0.0] * B
    open_rows = set(range(B))
    for _ in range(max_length):
        if not open_rows:
            break
        log_probs, state = step(Tensor(tokens, device=device), state)
        values, indices = _log_probs("greedy_decode", log_probs, B).max(axis=1)
        tokens = indices.tolist()
        for b, (value, token) in enumerate(zip(values.tolist(), tokens)):
            if b in open_rows:
                sequences[b].append(token)
                scores[b] += value
                if token == end_token:
                    open_rows.discard(b)
    return sequences, scores


def _penalty(length_penalty):
    if callable(length_penalty):
        return length_penalty
    if length_penalty < 0:
        raise ValueError(f"beam_search: length_penalty must be >= 0 (GNMT's alpha) or a function, got {length_penalty}")
    return lambda n: ((5 + n) / 6) ** length_penalty


@no_grad()
def beam_search(step, state, start_token, end_token, beam_width, max_length, length_penalty=0.0, n_best=1):
    """The best hypotheses of at most max_length tokens under step (see the module docstring).

    state: the decoder's initial state for a batch of B rows (beam_search tiles it to B * beam_width
    rows; tile the tensors that the step function reads from outside with `tile_beams`).
    A hypothesis ends when it produces end_token; one still open after max_length tokens is kept as
    it is. The search stops early once no open hypothesis can beat the n_best finished ones, given
    that log-probabilities are <= 0 and the length penalty does not decrease with length, so its
    result is that of running to max_length. beam_width = 1 is greedy decoding (with alpha = 0);
    a beam as wide as the number of possible sequences is an exhaustive search.

    Returns (sequences, scores): per batch row, its n_best token lists, best first, and their
    scores (total log-probability / length penalty).
    """
    if beam_width < 1 or n_best < 1 or n_best > beam_width or max_length < 1:
        raise ValueError(f"beam_search: need beam_width >= 1, 1 <= n_best <= beam_width and max_length >= 1, got "
                         f"beam_width={beam_width}, n_best={n_best}, max_length={max_length}")
    penalty, K = _penalty(length_penalty), beam_width
    B, device = _batch_size("beam_search", state)
    state = _reorder(state, backend.namespace(device).arange(B).repeat(K))
    scores = [[0.0] + [-math.inf] * (K - 1) for _ in range(B)]  # only one copy of the start is open
    beams = [[[] for _ in range(K)] for _ in range(B)]  # the open hypotheses' tokens
    finished = [[] for _ in range(B)]  # (score, tokens), best first, at most n_best
    tokens = [start_token] * (B * K)
    for length in range(1, max_length + 1):
        log_probs, state = step(Tensor(tokens, device=device), state)
        V = _log_probs("beam_search", log_probs, B * K).shape[1]
        totals = log_probs + Tensor(scores, dtype=log_probs.dtype, device=device).reshape(B * K, 1)
        # down the ranked extensions until K open ones: each ending passed on the way is a finished
        # hypothesis; the 2K best hold K that do not end (each open hypothesis has one ending)
        values, indices = totals.reshape(B, K * V).topk(min(2 * K, K * V), dim=1)
        rows, done = [], True
        for b, (row_values, row_indices) in enumerate(zip(values.tolist(), indices.tolist())):
            kept = []
            for total, index in zip(row_values, row_indices):
                beam, token = divmod(index, V)
                if total == -math.inf or len(kept) == K:
                    break
                if token == end_token:
                    finished[b].append((total / penalty(length), beams[b][beam] + [token]))
                else:
                    kept.append((total, beam, token))
            kept += [(-math.inf, 0, end_token)] * (K - len(kept))  # dead slots: never extended
            scores[b] = [total for total, _, _ in kept]
            beams[b] = [beams[b][beam] + [token] for _, beam, token in kept]
            rows += [b * K + beam for _, beam, _ in kept]
            tokens[b * K:(b + 1) * K] = [token for _, _, token in kept]
            finished[b] = sorted(finished[b], key=lambda f: -f[0])[:n_best]
            best_open = scores[b][0] / penalty(max_length)  # no open hypothesis can ever score more
            done = done and (best_open == -math.inf or len(finished[b]) == n_best and finished[b][-1][0] >= best_open)
        if done:
            break
        state = _reorder(state, Tensor(rows, device=device).array)
    else:  # max_length reached: the open hypotheses compete as they are
        for b in range(B):
            opened = [(s / penalty(max_length), beam) for s, beam in zip(scores[b], beams[b]) if s > -math.inf]
            finished[b] = sorted(finished[b] + opened, key=lambda f: -f[0])[:n_best]
    return [[seq for _, seq in f] for f in finished], [[score for score, _ in f] for f in finished]
