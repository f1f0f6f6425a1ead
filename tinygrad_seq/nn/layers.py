"""Feed-forward layers: Linear, Embedding, Dropout, LayerNorm, Unflatten."""
import math

from . import functional as F
from ..tensors import zeros
from . import init
from .module import Module, Parameter, check_input


def _empty(*shape, dtype=None, device=None):
    return Parameter(zeros(*shape, dtype=dtype, device=device))


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), PyTorch's init."""

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features, dtype=dtype, device=device)
        self.bias = _empty(out_features, dtype=dtype, device=device) if bias else None
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        init.uniform_(self.weight, -bound, bound)
        if bias:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        check_input(self, x, self.weight)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table of `num_embeddings` vectors; the `padding_idx` row starts at zero and gets no gradient.

    `_weight` (PyTorch's, used by from_pretrained) gives the table instead of N(0, 1) values; `_freeze`
    makes it not require grad.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None, device=None, *, _weight=None,
                 _freeze=False):
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for {num_embeddings} embeddings")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        if _weight is not None:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {tuple(_weight.shape)}, expected "
                                 f"({num_embeddings}, {embedding_dim})")
            self.weight = Parameter(_weight, requires_grad=not _freeze, dtype=dtype, device=device)
            return
        self.weight = _empty(num_embeddings, embedding_dim, dtype=dtype, device=device)
        self.weight.requires_grad_(not _freeze)
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.array[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding a copy of `embeddings` (a 2-D Tensor or array, its dtype and device kept),
        frozen unless freeze=False. The padding_idx row is kept as given and gets no gradient."""
        if embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-dimensional, got shape "
                             f"{tuple(embeddings.shape)}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, _weight=embeddings, _freeze=freeze)

    def forward(self, indices):
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Zero elements with probability p in training mode (scaled by 1/(1-p)); identity in eval."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` dims, then scale and shift (biased variance)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, dtype=None, device=None):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(zeros(*shape, dtype=dtype, device=device) + 1) if elementwise_affine else None
        self.bias = _empty(*shape, dtype=dtype, device=device) if elementwise_affine else None

    def forward(self, x):
        check_input(self, x, self.weight)
        n = len(self.normalized_shape)
        if x.shape[x.ndim - n:] != self.normalized_shape:
            raise ValueError(f"LayerNorm: input of shape {x.shape} does not end in {self.normalized_shape}")
        axes = tuple(range(x.ndim - n, x.ndim))
        centered = x - x.mean(axes, keepdims=True)
        out = centered / ((centered * centered).mean(axes, keepdims=True) + self.eps).sqrt()
        return out * self.weight + self.bias if self.weight is not None else out

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class Unflatten(Module):
    """Split axis `dim` into the sizes `unflattened_size` (one may be -1): Flatten's inverse."""

    def __init__(self, dim, unflattened_size):
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        if not -x.ndim <= self.dim < x.ndim:
            raise IndexError(f"Unflatten: dim {self.dim} is out of range for an input of shape {x.shape}")
        dim, sizes = self.dim % x.ndim, self.unflattened_size
        known = math.prod(n for n in sizes if n != -1)
        if sizes.count(-1) > 1 or any(n < -1 for n in sizes) or \
                (x.shape[dim] != known if -1 not in sizes else known == 0 or x.shape[dim] % known):
            raise ValueError(f"Unflatten: sizes {list(sizes)} do not multiply up to the size of dim {dim} "
                             f"({x.shape[dim]}) of the input of shape {x.shape}")
        return x.reshape(x.shape[:dim] + sizes + x.shape[dim + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
