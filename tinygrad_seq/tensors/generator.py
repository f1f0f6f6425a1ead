"""tg.Generator: a random stream of its own (PyTorch's torch.Generator), for the functions that take
`generator=` (randn, rand, randint, randperm, nn.init, random_split, samplers)."""
from ..engine import backend

DEFAULT_SEED = 67280421310721  # what a fresh torch.Generator() starts from


class Generator:
    """A random stream on `device`, independent of the global one that tg.manual_seed seeds.

    Like torch.Generator, a new one starts from a fixed seed (the same numbers every run) until
    manual_seed or seed is called. get_state() is a snapshot (a dict of numbers and host arrays,
    not PyTorch's byte tensor) that set_state() restores, on the same kind of device.
    """
    __slots__ = ("device", "_seed", "_rng")

    def __init__(self, device="cpu"):
        self.device = backend.parse_device(device)
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed):
        """Restart the stream from `seed` (an integer; negative ones wrap around 2**64, as in PyTorch)."""
        if isinstance(seed, bool) or not hasattr(seed, "__index__"):
            raise TypeError(f"Generator.manual_seed: seed must be an integer, got {seed!r}")
        seed = seed.__index__()
        if not -2**63 <= seed < 2**64:
            raise RuntimeError(f"Generator.manual_seed: seed must be within [-2**63, 2**64), got {seed}")
        self._seed = seed % 2**64
        self._rng = backend.new_rng(self.device, self._seed)
        return self

    def seed(self):
        """Restart the stream from a seed drawn from the operating system's entropy; returns that seed."""
        seed = int(backend.host_rng(None).integers(0, 2**63))
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        """The seed the stream last started from."""
        return self._seed

    def get_state(self):
        """A snapshot of the stream: set_state(snapshot) makes it draw the same numbers again."""
        return {"seed": self._seed, "state": backend.generator_state(self.device, self._rng)}

    def set_state(self, state):
        """Restore a snapshot taken by get_state (of a generator on the same kind of device)."""
        if not isinstance(state, dict) or set(state) != {"seed", "state"}:
            raise ValueError("Generator.set_state: expected the dict that get_state() returns, with keys 'seed' "
                             f"and 'state', got {type(state).__name__}")
        rng = backend.new_rng(self.device, 0)
        try:
            backend.set_generator_state(self.device, rng, state["state"])
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"Generator.set_state: not a state of a {self.device.type} generator: {e}") from None
        self._seed, self._rng = int(state["seed"]), rng
        return self

    def __repr__(self):
        return f"<tinygrad_seq.Generator on {self.device}>"


def stream(generator, device, op):
    """The random stream `op` draws from on `device`: the generator's, or the global one when None."""
    if generator is None:
        return backend.rng(device)
    if not isinstance(generator, Generator):
        raise TypeError(f"{op}: generator must be a tg.Generator, got {type(generator).__name__}")
    if generator.device != device:
        raise RuntimeError(f"{op}: the generator is on {generator.device} but the result goes to {device}; "
                           f"make the generator with tg.Generator(device={str(device)!r})")
    return generator._rng
