"""The JAX column of bench_recurrent.py: jit-compiled training steps of a single-layer LSTM,
GRU and tanh RNN with PyTorch semantics, on the CPU, in float32.

Same model as numpy_floor.py (parameter names weight_ih_l0, weight_hh_l0, bias_ih_l0,
bias_hh_l0; LSTM gates i, f, g, o; GRU gates r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); zero initial state). The input projection
is one matmul over all T*B rows before a `jax.lax.scan` over time; the loss is
sum(output * G); `jax.value_and_grad` gives the gradients w.r.t. the four parameters and
x; the whole step is one `jax.jit`.

This module is imported only inside the JAX worker process of bench_recurrent.py, after
`configure(threads)` has set the platform and the threads: JAX reads JAX_PLATFORMS and
XLA_FLAGS when it initialises its backend.
"""

import os
import time

import numpy as np

PARAM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def configure(threads):
    """CPU platform, and XLA's threads limited to `threads` cores (call before importing jax).

    XLA's CPU client sizes its thread pools (the PJRT client's and Eigen's intra-op pool)
    from the cores the process may run on, so the worker pins itself to `threads` of its
    allowed cores with sched_setaffinity. With one thread it also sets
    --xla_cpu_multi_thread_eigen=false (unless XLA_FLAGS is already set: then it is left
    exactly as given). Returns a description of what was done.
    """
    os.environ["JAX_PLATFORMS"] = "cpu"
    notes = []
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        allowed = list(range(os.cpu_count() or 1))
    if threads and threads < len(allowed):
        try:
            os.sched_setaffinity(0, set(allowed[:threads]))
            notes.append("pinned to cores %s" % ",".join(map(str, allowed[:threads])))
        except (AttributeError, OSError) as e:
            notes.append("could not pin to %d cores (%s)" % (threads, e))
    else:
        notes.append("%d cores" % len(allowed))
    if threads == 1 and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    notes.append("XLA_FLAGS=%r" % os.environ.get("XLA_FLAGS", ""))
    return ", ".join(notes)


def make_loss(kind):
    """loss(W_ih, W_hh, b_ih, b_hh, x, G) = sum(layer(x) * G) for kind lstm / gru / rnn."""
    import jax
    import jax.numpy as jnp

    def project(W_ih, b, x):          # hoisted input projection: one matmul over T*B rows
        T, B, I = x.shape
        return (x.reshape(T * B, I) @ W_ih.T + b).reshape(T, B, W_ih.shape[0])

    def lstm(W_ih, W_hh, b_ih, b_hh, x, G):
        H = W_hh.shape[1]
        xp = project(W_ih, b_ih + b_hh, x)

        def step(carry, a):
            h, c = carry
            a = a + h @ W_hh.T
            i = jax.nn.sigmoid(a[:, :H])
            f = jax.nn.sigmoid(a[:, H:2 * H])
            g = jnp.tanh(a[:, 2 * H:3 * H])
            o = jax.nn.sigmoid(a[:, 3 * H:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), h

        h0 = jnp.zeros((x.shape[1], H), x.dtype)
        _, out = jax.lax.scan(step, (h0, h0), xp)
        return jnp.sum(out * G)

    def gru(W_ih, W_hh, b_ih, b_hh, x, G):
        H = W_hh.shape[1]
        xp = project(W_ih, b_ih, x)

        def step(h, a):
            rec = h @ W_hh.T + b_hh
            r = jax.nn.sigmoid(a[:, :H] + rec[:, :H])
            z = jax.nn.sigmoid(a[:, H:2 * H] + rec[:, H:2 * H])
            n = jnp.tanh(a[:, 2 * H:] + r * rec[:, 2 * H:])
            h = (1 - z) * n + z * h
            return h, h

        _, out = jax.lax.scan(step, jnp.zeros((x.shape[1], H), x.dtype), xp)
        return jnp.sum(out * G)

    def rnn(W_ih, W_hh, b_ih, b_hh, x, G):
        H = W_hh.shape[1]
        xp = project(W_ih, b_ih + b_hh, x)

        def step(h, a):
            h = jnp.tanh(a + h @ W_hh.T)
            return h, h

        _, out = jax.lax.scan(step, jnp.zeros((x.shape[1], H), x.dtype), xp)
        return jnp.sum(out * G)

    return {"lstm": lstm, "gru": gru, "rnn": rnn}[kind]


class JaxCases:
    """The worker-side interface bench_recurrent.py's worker loop drives (like TorchCases):
    setup() compiles, step() times one step, grads() returns (loss, {name: array})."""

    def __init__(self, threads):
        how = configure(threads)
        import jax
        import jaxlib
        self.jax = jax
        devices = jax.devices()
        self.description = "jax %s (jaxlib %s, %s, %s)" % (
            jax.__version__, getattr(jaxlib, "__version__", "?"),
            ", ".join(str(d) for d in devices), how)
        self._compiled = {}

    def setup(self, kind, params, x, G):
        jax = self.jax
        if x.dtype != np.float32:
            # float64 would need jax_enable_x64; the column is float32 only
            raise ValueError("the JAX column is float32 only (got %s)" % x.dtype)
        if kind not in self._compiled:
            self._compiled[kind] = jax.jit(jax.value_and_grad(make_loss(kind),
                                                              argnums=(0, 1, 2, 3, 4)))
        fn = self._compiled[kind]
        args = [jax.device_put(params[n]) for n in PARAM_NAMES]
        args += [jax.device_put(x), jax.device_put(G)]
        jax.block_until_ready(fn(*args))       # compile for these shapes, outside the timing
        return fn, args

    def step(self, case):
        fn, args = case
        t0 = time.perf_counter()
        self.jax.block_until_ready(fn(*args))
        return time.perf_counter() - t0

    def grads(self, case):
        fn, args = case
        loss, g = fn(*args)
        out = {n: np.array(v, copy=True) for n, v in zip(PARAM_NAMES, g[:4])}
        out["x"] = np.array(g[4], copy=True)
        return float(loss), out
