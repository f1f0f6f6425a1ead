"""Hand-written NumPy forward pass and backpropagation through time: the test oracle.

Independent of tinygrad_seq and of any autograd: every derivative below is written out
from the cell equations, the way course notes do it, in float64. Semantics are exactly
PyTorch's nn.RNN / nn.LSTM / nn.GRU (time-major input, gate orders i,f,g,o and r,z,n,
two biases, h_n ordered [l0 fwd, l0 rev, l1 fwd, ...]).

Conventions
-----------
* A cell's parameters are a dict ``{"weight_ih", "weight_hh"[, "bias_ih", "bias_hh"]}``;
  both biases are present or both absent (bias=False). An LSTM with a projection
  (nn.LSTM(proj_size=P)) also has ``"weight_hr"`` (P, H): its h has P features.
* Gradients are of the scalar loss ``L = sum(out * grad_out)`` summed over every output
  that has an incoming gradient (a missing one counts as zero).
* Variable lengths follow pack_padded_sequence(enforce_sorted=False) +
  pad_packed_sequence(total_length=T): at time t only the batch rows with t < lengths[b]
  take a step (the "active rows"); the other rows keep their state, output zeros and
  never read their input. Running t from T-1 down to 0 with this rule makes the reverse
  direction start at x[lengths[b] - 1, b] from h0, as PyTorch does.

Public API: ``layer_forward_backward`` (whole multi-layer, possibly bidirectional layer),
``cell_forward_backward`` (one cell step), ``direction_forward`` / ``direction_backward``
(one direction of one layer) and the per-cell steps ``{rnn,lstm,gru}_step_{forward,backward}``.
"""

import numpy as np

KINDS = ("rnn", "lstm", "gru")
NONLINEARITIES = ("tanh", "relu")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def sigmoid(a):
    """Logistic function, split on the sign of a so exp never overflows."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def _affine(x, params, side):
    """x @ weight_{side}^T + bias_{side} (bias skipped when absent); side is "ih" or "hh"."""
    out = x @ params["weight_" + side].T
    bias = params.get("bias_" + side)
    return out if bias is None else out + bias


def _affine_grads(grad_ih, x, grad_hh, h, params):
    """Parameter gradients given dL/d(pre-activation) on the input and recurrent sides."""
    grads = {"weight_ih": grad_ih.T @ x, "weight_hh": grad_hh.T @ h}
    if "bias_ih" in params:
        grads["bias_ih"] = grad_ih.sum(axis=0)
        grads["bias_hh"] = grad_hh.sum(axis=0)
    return grads


# ----------------------------------------------------------------------------- RNN cell
# a = x W_ih^T + b_ih + h W_hh^T + b_hh ;  h' = act(a)


def rnn_step_forward(x, h, params, nonlinearity="tanh"):
    """One Elman step; returns (h_new, cache)."""
    a = _affine(x, params, "ih") + _affine(h, params, "hh")
    h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
    return h_new, (x, h, h_new)


def rnn_step_backward(cache, params, grad_h_new, nonlinearity="tanh"):
    """Backward of one Elman step; returns (grad_x, grad_h, grad_params)."""
    x, h, h_new = cache
    # dL/da = dL/dh' * act'(a): diag(1 - h'^2) for tanh, the indicator a > 0 for relu.
    act_grad = 1.0 - h_new**2 if nonlinearity == "tanh" else (h_new > 0.0).astype(h_new.dtype)
    grad_a = grad_h_new * act_grad
    grad_x = grad_a @ params["weight_ih"]
    grad_h = grad_a @ params["weight_hh"]
    return grad_x, grad_h, _affine_grads(grad_a, x, grad_a, h, params)


# ---------------------------------------------------------------------------- LSTM cell
# [a_i a_f a_g a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh
# i, f, o = sigmoid(a_i, a_f, a_o) ; g = tanh(a_g) ; c' = f c + i g ; m = o tanh(c')
# h' = m, or h' = m W_hr^T with a projection (weight_hr)


def lstm_step_forward(x, h, c, params):
    """One LSTM step; returns (h_new, c_new, cache)."""
    a_i, a_f, a_g, a_o = np.split(_affine(x, params, "ih") + _affine(h, params, "hh"), 4, axis=1)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
    c_new = f * c + i * g
    tanh_c_new = np.tanh(c_new)
    m = o * tanh_c_new
    h_new = m @ params["weight_hr"].T if "weight_hr" in params else m
    return h_new, c_new, (x, h, c, i, f, g, o, tanh_c_new, m)


def lstm_step_backward(cache, params, grad_h_new, grad_c_new):
    """Backward of one LSTM step; returns (grad_x, grad_h, grad_c, grad_params)."""
    x, h, c, i, f, g, o, tanh_c_new, m = cache
    if "weight_hr" in params:  # h' = m W_hr^T: dL/dW_hr = (dL/dh')^T m and dL/dm = dL/dh' W_hr
        grad_hr = grad_h_new.T @ m
        grad_h_new = grad_h_new @ params["weight_hr"]
    # c' reaches the loss directly (grad_c_new) and through h' = o tanh(c').
    grad_c_total = grad_c_new + grad_h_new * o * (1.0 - tanh_c_new**2)
    grad_o = grad_h_new * tanh_c_new
    grad_i = grad_c_total * g
    grad_f = grad_c_total * c
    grad_g = grad_c_total * i
    grad_c = grad_c_total * f
    grad_a = np.concatenate(
        [grad_i * i * (1.0 - i), grad_f * f * (1.0 - f), grad_g * (1.0 - g**2), grad_o * o * (1.0 - o)],
        axis=1,
    )
    grad_x = grad_a @ params["weight_ih"]
    grad_h = grad_a @ params["weight_hh"]
    grads = _affine_grads(grad_a, x, grad_a, h, params)
    if "weight_hr" in params:
        grads["weight_hr"] = grad_hr
    return grad_x, grad_h, grad_c, grads


# ----------------------------------------------------------------------------- GRU cell
# [u_r u_z u_n] = x W_ih^T + b_ih ; [v_r v_z v_n] = h W_hh^T + b_hh
# r = sigmoid(u_r + v_r) ; z = sigmoid(u_z + v_z) ; n = tanh(u_n + r v_n) ; h' = (1-z) n + z h


def gru_step_forward(x, h, params):
    """One GRU step; returns (h_new, cache)."""
    u_r, u_z, u_n = np.split(_affine(x, params, "ih"), 3, axis=1)
    v_r, v_z, v_n = np.split(_affine(h, params, "hh"), 3, axis=1)
    r = sigmoid(u_r + v_r)
    z = sigmoid(u_z + v_z)
    n = np.tanh(u_n + r * v_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, (x, h, r, z, n, v_n)


def gru_step_backward(cache, params, grad_h_new):
    """Backward of one GRU step; returns (grad_x, grad_h, grad_params)."""
    x, h, r, z, n, v_n = cache
    grad_n = grad_h_new * (1.0 - z)
    grad_z = grad_h_new * (h - n)
    grad_a_n = grad_n * (1.0 - n**2)  # dL/d(u_n + r v_n)
    grad_r = grad_a_n * v_n
    grad_a_r = grad_r * r * (1.0 - r)
    grad_a_z = grad_z * z * (1.0 - z)
    grad_u = np.concatenate([grad_a_r, grad_a_z, grad_a_n], axis=1)
    grad_v = np.concatenate([grad_a_r, grad_a_z, grad_a_n * r], axis=1)
    grad_x = grad_u @ params["weight_ih"]
    grad_h = grad_h_new * z + grad_v @ params["weight_hh"]
    return grad_x, grad_h, _affine_grads(grad_u, x, grad_v, h, params)


# ------------------------------------------------------------------- one step, any kind


def step_forward(kind, x, h, c, params, nonlinearity="tanh"):
    """One step of any cell; returns (h_new, c_new or None, cache)."""
    if kind == "lstm":
        return lstm_step_forward(x, h, c, params)
    if kind == "gru":
        h_new, cache = gru_step_forward(x, h, params)
    else:
        h_new, cache = rnn_step_forward(x, h, params, nonlinearity)
    return h_new, None, cache


def step_backward(kind, cache, params, grad_h_new, grad_c_new=None, nonlinearity="tanh"):
    """Backward of one step of any cell; returns (grad_x, grad_h, grad_c or None, grad_params)."""
    if kind == "lstm":
        return lstm_step_backward(cache, params, grad_h_new, grad_c_new)
    if kind == "gru":
        grad_x, grad_h, grad_params = gru_step_backward(cache, params, grad_h_new)
    else:
        grad_x, grad_h, grad_params = rnn_step_backward(cache, params, grad_h_new, nonlinearity)
    return grad_x, grad_h, None, grad_params


def _as_f64(array):
    return np.array(array, dtype=np.float64)


def _check_kind(kind, nonlinearity):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")


def cell_forward_backward(kind, x, h, c, params, grad_h, grad_c=None, nonlinearity="tanh"):
    """One cell step, forward and backward, for x (B, I) and state (B, H).

    h (and c for lstm) may be None for a zero state; c must be None unless kind is "lstm".
    Loss: L = sum(h_new * grad_h) + sum(c_new * grad_c).
    Returns (h_new, c_new or None, grads): grads has every key of params plus "x", "h"
    and (lstm) "c".
    """
    _check_kind(kind, nonlinearity)
    params = {name: _as_f64(value) for name, value in params.items()}
    x = _as_f64(x)
    h = np.zeros((x.shape[0], params["weight_hh"].shape[1])) if h is None else _as_f64(h)
    if kind == "lstm":
        cell = (x.shape[0], params["weight_hh"].shape[0] // 4)  # c has H features, h P with a projection
        c = np.zeros(cell) if c is None else _as_f64(c)
        grad_c = np.zeros(cell) if grad_c is None else _as_f64(grad_c)
    elif c is not None or grad_c is not None:
        raise ValueError(f"{kind} has no cell state: c and grad_c must be None")
    h_new, c_new, cache = step_forward(kind, x, h, c, params, nonlinearity)
    grad_x, grad_h_prev, grad_c_prev, grads = step_backward(
        kind, cache, params, _as_f64(grad_h), grad_c, nonlinearity
    )
    grads.update(x=grad_x, h=grad_h_prev)
    if kind == "lstm":
        grads["c"] = grad_c_prev
    return h_new, c_new, grads


# -------------------------------------------------------- one direction of one layer


def direction_forward(kind, x, params, h0, c0, lengths, reverse=False, nonlinearity="tanh"):
    """Run one direction of one layer over x (T, B, I) from h0 (B, H) (and c0 for lstm).

    lengths: int array (B,). Returns (output (T, B, H), h_n, c_n or None, tape); the tape
    lists (t, active_rows, cache) in the order the steps ran, for direction_backward.
    """
    T = x.shape[0]
    h = h0.copy()
    c = None if c0 is None else c0.copy()
    output = np.zeros(x.shape[:2] + (h.shape[1],))
    tape = []
    for t in reversed(range(T)) if reverse else range(T):
        rows = np.flatnonzero(lengths > t)
        h_rows, c_rows, cache = step_forward(
            kind, x[t, rows], h[rows], None if c is None else c[rows], params, nonlinearity
        )
        h[rows] = h_rows
        if c is not None:
            c[rows] = c_rows
        output[t, rows] = h_rows
        tape.append((t, rows, cache))
    return output, h, c, tape


def direction_backward(kind, tape, params, grad_output, grad_h_n, grad_c_n=None, nonlinearity="tanh"):
    """Backpropagation through time for one direction of one layer.

    grad_output (T, B, H), grad_h_n (B, H), grad_c_n (B, H) for lstm, else None.
    Returns (grad_x (T, B, I), grad_h0, grad_c0 or None, grad_params).
    """
    T, B, _ = grad_output.shape
    grad_x = np.zeros((T, B, params["weight_ih"].shape[1]))
    grad_params = {name: np.zeros_like(value) for name, value in params.items()}
    # grad_h holds dL/dh_t through later steps only (starts as dL/dh_n), i.e. for the
    # tanh RNN (dL/dh_{t+1} * (1 - h_{t+1}^2)) @ W_hh; rows that did not step pass it on.
    grad_h = grad_h_n.copy()
    grad_c = None if grad_c_n is None else grad_c_n.copy()
    for t, rows, cache in reversed(tape):
        # dL/dh_t = dL/dy_t + (contribution of h_t through step t+1)
        grad_h_t = grad_output[t, rows] + grad_h[rows]
        grad_x_t, grad_h_prev, grad_c_prev, step_grads = step_backward(
            kind, cache, params, grad_h_t, None if grad_c is None else grad_c[rows], nonlinearity
        )
        grad_x[t, rows] = grad_x_t
        grad_h[rows] = grad_h_prev
        if grad_c is not None:
            grad_c[rows] = grad_c_prev
        for name, value in step_grads.items():
            grad_params[name] += value
    return grad_x, grad_h, grad_c, grad_params


# ----------------------------------------------------------------- the whole layer


def _direction_params(params, layer, direction):
    """(cell parameters of one layer and direction under their cell names, their name suffix)."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    return {name: params[name + suffix] for name in names if name + suffix in params}, suffix


def _lengths_array(lengths, T, B):
    if lengths is None:
        return np.full(B, T)
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be {B} integers in 1..{T}, got {lengths.tolist()}")
    return lengths.astype(np.int64)


def layer_forward_backward(
    kind,
    x,
    params,
    h0=None,
    c0=None,
    lengths=None,
    num_layers=1,
    bidirectional=False,
    nonlinearity="tanh",
    grad_output=None,
    grad_h_n=None,
    grad_c_n=None,
):
    """Forward and BPTT of a PyTorch-style RNN/LSTM/GRU layer (time-major, no dropout).

    kind in {"rnn", "lstm", "gru"}; x (T, B, I); params: PyTorch state_dict names
    ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "..._reverse"; "weight_hr_l0" for
    an LSTM with a projection) to arrays; h0 (num_layers*D, B, P), c0 (num_layers*D, B, H), zeros if
    None, where P = H unless projected; lengths: B ints in 1..T or None (all T).
    Loss: L = sum(output*grad_output) + sum(h_n*grad_h_n) + sum(c_n*grad_c_n), a missing
    grad_* counting as zero.
    Returns (output (T, B, D*P), h_n, c_n or None, grads): grads has a gradient for every
    key of params plus "x", "h0" and (lstm) "c0".
    """
    _check_kind(kind, nonlinearity)
    if kind != "lstm" and (c0 is not None or grad_c_n is not None):
        raise ValueError(f"{kind} has no cell state: c0 and grad_c_n must be None")
    x = _as_f64(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, I), got shape {x.shape}")
    params = {name: _as_f64(value) for name, value in params.items()}
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    P, H = params["weight_hh_l0"].shape[1], params["weight_hh_l0"].shape[0] // GATES[kind]  # P: h's width
    lengths = _lengths_array(lengths, T, B)
    h_shape, c_shape = (num_layers * D, B, P), (num_layers * D, B, H)

    def state_or_zeros(array, shape):
        return np.zeros(shape) if array is None else _as_f64(array)

    h0 = state_or_zeros(h0, h_shape)
    c0 = state_or_zeros(c0, c_shape) if kind == "lstm" else None
    grad_output = np.zeros((T, B, D * P)) if grad_output is None else _as_f64(grad_output)
    grad_h_n = state_or_zeros(grad_h_n, h_shape)
    grad_c_n = state_or_zeros(grad_c_n, c_shape) if kind == "lstm" else None

    # Forward, layer by layer; layer k > 0 reads [forward output, reverse output] of layer k-1.
    h_n = np.zeros(h_shape)
    c_n = np.zeros(c_shape) if kind == "lstm" else None
    tapes = {}
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(D):
            index = layer * D + direction
            cell_params, _ = _direction_params(params, layer, direction)
            out, h_n[index], c_last, tapes[index] = direction_forward(
                kind, layer_input, cell_params, h0[index], None if c0 is None else c0[index],
                lengths, reverse=direction == 1, nonlinearity=nonlinearity,
            )
            if c_n is not None:
                c_n[index] = c_last
            outputs.append(out)
        layer_input = np.concatenate(outputs, axis=2)
    output = layer_input

    # Backward, top layer first; the gradient of layer k's output is the sum of what both
    # directions of layer k+1 send back to their input.
    grads = {}
    grad_h0 = np.zeros(h_shape)
    grad_c0 = np.zeros(c_shape) if kind == "lstm" else None
    grad_layer_output = grad_output
    for layer in reversed(range(num_layers)):
        grad_inputs = []
        for direction in range(D):
            index = layer * D + direction
            cell_params, suffix = _direction_params(params, layer, direction)
            grad_x, grad_h0[index], grad_c_first, step_grads = direction_backward(
                kind, tapes[index], cell_params, grad_layer_output[:, :, direction * P:(direction + 1) * P],
                grad_h_n[index], None if grad_c_n is None else grad_c_n[index], nonlinearity,
            )
            if grad_c0 is not None:
                grad_c0[index] = grad_c_first
            grads.update({name + suffix: value for name, value in step_grads.items()})
            grad_inputs.append(grad_x)
        grad_layer_output = sum(grad_inputs)
    grads.update(x=grad_layer_output, h0=grad_h0)
    if kind == "lstm":
        grads["c0"] = grad_c0
    return output, h_n, c_n, grads
