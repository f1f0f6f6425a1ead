"""Batch normalization (PyTorch's BatchNorm1d and F.batch_norm): normalise each channel over the batch
(and length), keep running statistics for evaluation."""
from ..engine.function import no_grad
from ..tensors import Tensor, ones, zeros
from .module import Module, Parameter, check_input


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise channel c (axis 1) of `input` (N, C, *) by its mean and biased variance over every
    other axis (training) or by running_mean / running_var (evaluation), then scale and shift.

    In training, the running statistics (when given) move towards the batch's, in place:
    r = (1 - momentum) * r + momentum * batch statistic, with the unbiased variance (n / (n - 1)).
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, *), got shape {input.shape}")
    channels = input.shape[1]
    shape = (1, channels) + (1,) * (input.ndim - 2)
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"batch_norm: {name} should have {channels} elements (one per channel of the input "
                             f"of shape {input.shape}), not shape {t.shape}")
    if training:
        count = input.numel() // channels
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        if eps <= 0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
        axes = (0,) + tuple(range(2, input.ndim))
        mean = input.mean(axes, keepdims=True)
        centered = input - mean
        var = (centered * centered).mean(axes, keepdims=True)
        if running_mean is not None:
            with no_grad():
                running_mean.mul_(1 - momentum).add_(mean.detach().reshape((channels,)), alpha=momentum)
        if running_var is not None:
            with no_grad():
                unbiased = var.detach().reshape((channels,)) * (count / (count - 1))
                running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
        centered = input - running_mean.detach().reshape(shape)
        var = running_var.detach().reshape(shape)
    out = centered / (var + eps).sqrt()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


class BatchNorm1d(Module):
    """Batch normalization of (N, C) or (N, C, L) input over N (and L), per channel (Ioffe & Szegedy 2015).

    Training normalises by the batch's statistics and updates running_mean and running_var
    (momentum=None: their cumulative average over all batches so far) and counts batches in
    num_batches_tracked; evaluation normalises by the running statistics. With
    track_running_stats=False there are none, and the batch's statistics are used in both modes.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(ones(num_features, dtype=dtype, device=device)) if affine else None
        self.bias = Parameter(zeros(num_features, dtype=dtype, device=device)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked", Tensor(0, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            with no_grad():
                self.weight.fill_(1)
                if self.bias is not None:
                    self.bias.zero_()

    def forward(self, x):
        check_input(self, x, self.weight if self.weight is not None else self.running_mean)
        if x.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected 2D or 3D input (N, C) or (N, C, L), got {x.ndim}D "
                             f"input of shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels (axis 1), got input "
                             f"of shape {x.shape}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / self.num_batches_tracked.item()
        use_batch = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if keep else None, self.running_var if keep else None,
                          self.weight, self.bias, use_batch, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")
