"""Hand-written NumPy training step of a recurrent layer: the floor for any NumPy engine.

One training step = forward over the whole sequence, the loss L = sum(output * G_out)
for a fixed G_out of shape (T, B, H) (so dL/doutput = G_out), and the full backward
(BPTT) to the weights, biases and input. Single layer, unidirectional, time-major
input x of shape (T, B, I), zero initial state, PyTorch semantics and parameter names:

    weight_ih_l0 (G*H, I), weight_hh_l0 (G*H, H), bias_ih_l0 (G*H,), bias_hh_l0 (G*H,)
    LSTM (G = 4, gates i, f, g, o):  c' = f*c + i*g,  h' = o*tanh(c')
    GRU  (G = 3, gates r, z, n):     n = tanh(W_in x + b_in + r*(W_hn h + b_hn)),
                                     h' = (1 - z)*n + z*h
    RNN  (G = 1):                    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

Everything stays in the dtype of x (float32 for the benchmark, float64 for checks):
only Python scalars (weak under NumPy 2's promotion rules) and arrays created with
dtype=x.dtype meet the data, never a NumPy float64 scalar.

What makes it fast (the engine is measured against this, so it should be hard to beat):
  * the input projection x @ W_ih^T (+ both biases where they add) is ONE matmul over all
    T*B rows before the loop; the loop only does h @ W_hh^T;
  * the transposed recurrent weight is a contiguous copy (a transposed view is 2-4x
    slower at small batch), and every per-step result goes through `out=` into buffers
    allocated once per call;
  * sigmoid(z) = 0.5*tanh(z/2) + 0.5 with the 1/2 folded into the sigmoid gates' rows of
    the weights and biases (a power of two: exact), so the LSTM takes ONE tanh over all
    four gates per step, plus a scale and a shift;
  * every gate derivative that does not depend on the incoming gradient (sigmoid',
    tanh', products with saved activations) is computed in bulk over all T*B rows after
    the forward, so the backward loop is only the recurrent matmul plus a few multiplies;
  * dW_ih, dW_hh, the bias gradients and dx are each ONE matmul (or one reduction) over
    all steps after the loop, from the per-step gate gradients stacked in (T*B, G*H).
NumPy calls per time step: LSTM 10 forward + 7 backward, GRU 12 + 8, RNN 3 + 3.

Each step function returns (loss, grads) where grads maps "weight_ih_l0", "weight_hh_l0",
"bias_ih_l0", "bias_hh_l0" and "x" to arrays of the input dtype; `train_step(kind, ...)`
dispatches on "lstm" / "gru" / "rnn".
"""

import numpy as np

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
PARAM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def lstm_train_step(x, G_out, W_ih, W_hh, b_ih, b_hh):
    """Forward, loss sum(h * G_out) and BPTT of a PyTorch-semantics LSTM layer."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    # i, f, o rows are scaled by 1/2 so that one tanh gives all four gates:
    # act = tanh(pre_scaled) * scale + shift  (sigmoid for i, f, o; tanh for g).
    scale = np.full(4 * H, 0.5, dtype=dt)
    scale[2 * H:3 * H] = 1.0
    shift = np.full(4 * H, 0.5, dtype=dt)
    shift[2 * H:3 * H] = 0.0
    WihT = np.ascontiguousarray(W_ih.T)
    WihT *= scale
    WhhT = np.ascontiguousarray(W_hh.T)
    WhhT *= scale
    bias = b_ih + b_hh
    bias *= scale

    x2 = x.reshape(T * B, I)
    A2 = np.matmul(x2, WihT)                  # (T*B, 4H) pre-activations, later activations
    A2 += bias
    A = A2.reshape(T, B, 4 * H)
    A4 = A2.reshape(T, B, 4, H)
    i_all, f_all, g_all, o_all = A4[:, :, 0], A4[:, :, 1], A4[:, :, 2], A4[:, :, 3]
    h_all = np.empty((T, B, H), dtype=dt)
    c_all = np.empty((T, B, H), dtype=dt)
    tc_all = np.empty((T, B, H), dtype=dt)    # tanh(c)
    rec = np.empty((B, 4 * H), dtype=dt)
    ig = np.empty((B, H), dtype=dt)

    for t in range(T):
        a = A[t]
        if t:
            np.matmul(h_all[t - 1], WhhT, out=rec)
            np.add(a, rec, out=a)
        np.tanh(a, out=a)
        np.multiply(a, scale, out=a)
        np.add(a, shift, out=a)
        c = c_all[t]
        if t:
            np.multiply(f_all[t], c_all[t - 1], out=c)
            np.multiply(i_all[t], g_all[t], out=ig)
            np.add(c, ig, out=c)
        else:
            np.multiply(i_all[t], g_all[t], out=c)
        np.tanh(c, out=tc_all[t])
        np.multiply(o_all[t], tc_all[t], out=h_all[t])

    loss = np.vdot(h_all, G_out)

    # Bulk part of the backward: K holds d(pre-activation)/d(upstream), per gate:
    #   K_i = g*i(1-i)  (times dc), K_f = c_prev*f(1-f) (times dc),
    #   K_g = i*(1-g^2) (times dc), K_o = tanh(c)*o(1-o) (times dh);
    # the loop turns K in place into the gate gradients dZ.
    K2 = np.subtract(1, A2)
    K2 *= A2
    K4 = K2.reshape(T, B, 4, H)
    K3 = K2.reshape(T, B, 4 * H)
    K4[:, :, 0] *= g_all
    K4[0, :, 1] = 0
    K4[1:, :, 1] *= c_all[:-1]
    Kg = K4[:, :, 2]
    np.multiply(g_all, g_all, out=Kg)
    np.subtract(1, Kg, out=Kg)
    Kg *= i_all
    K4[:, :, 3] *= tc_all
    P = np.multiply(tc_all, tc_all)           # dc += dh * o * (1 - tanh(c)^2)
    np.subtract(1, P, out=P)
    P *= o_all

    K_ifg = K4[:, :, 0:3]
    K_o = K4[:, :, 3]
    dh_buf = np.empty((B, H), dtype=dt)
    dc = np.empty((B, H), dtype=dt)
    dc_carry = np.empty((B, H), dtype=dt)
    dc3 = dc[:, None, :]
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            dh = G_out[t]
        else:
            dh = dh_buf
            np.matmul(K3[t + 1], W_hh, out=dh)
            np.add(dh, G_out[t], out=dh)
        np.multiply(dh, P[t], out=dc)
        if t != T - 1:
            np.add(dc, dc_carry, out=dc)
        np.multiply(K_ifg[t], dc3, out=K_ifg[t])
        np.multiply(K_o[t], dh, out=K_o[t])
        if t:
            np.multiply(dc, f_all[t], out=dc_carry)

    dZ = K2                                   # (T*B, 4H) gradients of the pre-activations
    db = dZ.sum(axis=0)
    grads = {
        "weight_ih_l0": dZ.T @ x2,
        "weight_hh_l0": dZ[B:].T @ h_all[:-1].reshape((T - 1) * B, H),
        "bias_ih_l0": db,
        "bias_hh_l0": db.copy(),
        "x": (dZ @ W_ih).reshape(T, B, I),
    }
    return loss, grads


def gru_train_step(x, G_out, W_ih, W_hh, b_ih, b_hh):
    """Forward, loss sum(h * G_out) and BPTT of a PyTorch-semantics GRU layer."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    # r, z rows scaled by 1/2: sigmoid(v) = 0.5*tanh(v/2) + 0.5 over the (B, 2H) block.
    scale = np.full(3 * H, 0.5, dtype=dt)
    scale[2 * H:] = 1.0
    WihT = np.ascontiguousarray(W_ih.T)
    WihT *= scale
    WhhT = np.ascontiguousarray(W_hh.T)
    WhhT *= scale
    bias = b_ih.copy()                        # r, z: b_i + b_h;  n: b_in only
    bias[:2 * H] += b_hh[:2 * H]
    bias *= scale
    b_hn = b_hh[2 * H:]

    x2 = x.reshape(T * B, I)
    A2 = np.matmul(x2, WihT)                  # pre-activations; becomes r, z, n in place
    A2 += bias
    A = A2.reshape(T, B, 3 * H)
    A4 = A2.reshape(T, B, 3, H)
    rz_all = A[:, :, :2 * H]
    r_all, z_all, n_all = A4[:, :, 0], A4[:, :, 1], A4[:, :, 2]
    h_all = np.empty((T, B, H), dtype=dt)
    ghn_all = np.empty((T, B, H), dtype=dt)   # W_hn h + b_hn
    gh = np.empty((B, 3 * H), dtype=dt)
    gh_rz = gh[:, :2 * H]
    gh_n = gh[:, 2 * H:]
    tmp = np.empty((B, H), dtype=dt)

    for t in range(T):
        rz = rz_all[t]
        n = n_all[t]
        if t:
            np.matmul(h_all[t - 1], WhhT, out=gh)
            np.add(rz, gh_rz, out=rz)
            np.add(gh_n, b_hn, out=ghn_all[t])
        else:
            ghn_all[0] = b_hn
        np.tanh(rz, out=rz)
        np.multiply(rz, 0.5, out=rz)
        np.add(rz, 0.5, out=rz)
        np.multiply(r_all[t], ghn_all[t], out=tmp)
        np.add(n, tmp, out=n)
        np.tanh(n, out=n)
        if t:
            np.subtract(h_all[t - 1], n, out=tmp)      # h' = n + z*(h - n)
            np.multiply(tmp, z_all[t], out=tmp)
            np.add(n, tmp, out=h_all[t])
        else:
            np.multiply(z_all[t], n, out=tmp)
            np.subtract(n, tmp, out=h_all[t])

    loss = np.vdot(h_all, G_out)

    # Bulk: dGI (input-side gate gradients) and dGH (hidden-side) start as coefficients
    #   n: (1-z)(1-n^2) (times dh)     z: (h_prev - n) z(1-z) (times dh)
    #   r: ghn r(1-r)   (times dn_pre) and become the gradients in place in the loop.
    dGI = np.empty((T, B, 3 * H), dtype=dt)
    dGH = np.empty((T, B, 3 * H), dtype=dt)
    dGI4 = dGI.reshape(T, B, 3, H)
    dGH4 = dGH.reshape(T, B, 3, H)
    Kn = dGI4[:, :, 2]
    np.multiply(n_all, n_all, out=Kn)
    np.subtract(1, Kn, out=Kn)
    one_minus_z = np.subtract(1, z_all)
    Kn *= one_minus_z
    Kz = dGH4[:, :, 1]
    np.multiply(z_all, one_minus_z, out=Kz)   # z(1-z)
    del one_minus_z
    Kz[0] *= n_all[0]
    np.negative(Kz[0], out=Kz[0])
    hmn = np.subtract(h_all[:-1], n_all[1:])
    Kz[1:] *= hmn
    del hmn
    Kr = dGH4[:, :, 0]
    np.subtract(1, r_all, out=Kr)
    Kr *= r_all
    Kr *= ghn_all
    dGH_n = dGH4[:, :, 2]

    dh_buf = np.empty((B, H), dtype=dt)
    dh_carry = np.empty((B, H), dtype=dt)     # dh_{t+1} * z_{t+1}
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            dh = G_out[t]
        else:
            dh = dh_buf
            np.matmul(dGH[t + 1], W_hh, out=dh)
            np.add(dh, G_out[t], out=dh)
            np.add(dh, dh_carry, out=dh)
        dn = Kn[t]
        np.multiply(dn, dh, out=dn)
        np.multiply(Kz[t], dh, out=Kz[t])
        np.multiply(Kr[t], dn, out=Kr[t])
        np.multiply(r_all[t], dn, out=dGH_n[t])
        if t:
            np.multiply(dh, z_all[t], out=dh_carry)

    dGI[:, :, :2 * H] = dGH[:, :, :2 * H]
    dGI2 = dGI.reshape(T * B, 3 * H)
    dGH2 = dGH.reshape(T * B, 3 * H)
    grads = {
        "weight_ih_l0": dGI2.T @ x2,
        "weight_hh_l0": dGH2[B:].T @ h_all[:-1].reshape((T - 1) * B, H),
        "bias_ih_l0": dGI2.sum(axis=0),
        "bias_hh_l0": dGH2.sum(axis=0),
        "x": (dGI2 @ W_ih).reshape(T, B, I),
    }
    return loss, grads


def rnn_train_step(x, G_out, W_ih, W_hh, b_ih, b_hh):
    """Forward, loss sum(h * G_out) and BPTT of a PyTorch-semantics tanh RNN layer."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    WhhT = np.ascontiguousarray(W_hh.T)
    x2 = x.reshape(T * B, I)
    h2 = x2 @ W_ih.T                          # pre-activations, tanh'ed in place: h_all
    h2 += b_ih + b_hh
    h_all = h2.reshape(T, B, H)
    rec = np.empty((B, H), dtype=dt)
    for t in range(T):
        h = h_all[t]
        if t:
            np.matmul(h_all[t - 1], WhhT, out=rec)
            np.add(h, rec, out=h)
        np.tanh(h, out=h)

    loss = np.vdot(h_all, G_out)

    dZ2 = np.multiply(h2, h2)                 # 1 - h^2, turned into dZ in place
    np.subtract(1, dZ2, out=dZ2)
    dZ = dZ2.reshape(T, B, H)
    dh = np.empty((B, H), dtype=dt)
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            np.multiply(dZ[t], G_out[t], out=dZ[t])
        else:
            np.matmul(dZ[t + 1], W_hh, out=dh)
            np.add(dh, G_out[t], out=dh)
            np.multiply(dZ[t], dh, out=dZ[t])

    db = dZ2.sum(axis=0)
    grads = {
        "weight_ih_l0": dZ2.T @ x2,
        "weight_hh_l0": dZ2[B:].T @ h2[:-B],
        "bias_ih_l0": db,
        "bias_hh_l0": db.copy(),
        "x": (dZ2 @ W_ih).reshape(T, B, I),
    }
    return loss, grads


STEPS = {"lstm": lstm_train_step, "gru": gru_train_step, "rnn": rnn_train_step}


def train_step(kind, x, G_out, params):
    """One training step of layer `kind` with `params` keyed like PyTorch's state_dict."""
    return STEPS[kind](x, G_out, *(params[name] for name in PARAM_NAMES))


def init_params(kind, input_size, hidden_size, rng, dtype=np.float32):
    """PyTorch's default init: every parameter uniform in +-1/sqrt(hidden_size)."""
    k = 1.0 / np.sqrt(hidden_size)
    gh = GATES[kind] * hidden_size
    shapes = {"weight_ih_l0": (gh, input_size), "weight_hh_l0": (gh, hidden_size),
              "bias_ih_l0": (gh,), "bias_hh_l0": (gh,)}
    return {name: rng.uniform(-k, k, size=shape).astype(dtype) for name, shape in shapes.items()}
