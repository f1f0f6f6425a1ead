"""PyTorch's function forms of the Tensor methods (torch.tanh(x) is x.tanh(), torch.sum(x, 1) is
x.sum(1), ...), generated once from the table METHOD_FORMS, and the few function forms that are not a
method call on their first argument (pow with a number base, var_mean, std_mean, broadcast_tensors).
tinygrad_seq/__init__.py exports them all as tg.<name>.
"""
from .axis_methods import broadcast_shape
from .tensor import Tensor

METHOD_FORMS = (
    # math
    "abs", "add", "atan", "ceil", "clamp", "clamp_max", "clamp_min", "clip", "cos", "cosh", "div", "divide", "erf",
    "erfc", "exp", "exp2", "expm1", "floor", "floor_divide", "frac", "lerp", "log", "log10", "log1p", "log2", "mul",
    "multiply", "nan_to_num", "neg", "negative", "reciprocal", "relu", "remainder", "round", "rsqrt", "sigmoid",
    "sign", "sin", "sinh", "sqrt", "square", "sub", "subtract", "tan", "tanh", "trunc", "fix",
    # comparisons, logic and tests of values
    "allclose", "eq", "equal", "ge", "greater", "greater_equal", "gt", "isclose", "isfinite", "isinf", "isnan",
    "isneginf", "isposinf", "le", "less", "less_equal", "logical_and", "logical_not", "logical_or", "logical_xor",
    "lt", "ne", "not_equal", "bitwise_and", "bitwise_not", "bitwise_or", "bitwise_xor",
    # reductions and statistics
    "all", "amax", "amin", "any", "argmax", "argmin", "count_nonzero", "dist", "logsumexp", "max", "mean", "min",
    "norm", "prod", "std", "sum", "var",
    # sorting, running sums and products
    "argsort", "cumprod", "cumsum", "diff", "sort", "topk",
    # shapes, selection and repeats
    "argwhere", "broadcast_to", "chunk", "diag", "diagonal", "flatten", "flip", "gather", "index_select",
    "masked_fill", "masked_select", "narrow", "nonzero", "permute", "repeat_interleave", "reshape", "roll",
    "scatter", "scatter_add", "select", "split", "squeeze", "t", "take", "tile", "trace", "transpose", "tril",
    "triu", "unbind", "unique", "unsqueeze",
    # products
    "bmm", "dot", "matmul", "mm", "mv", "outer",
    # softmax and friends, sampling, copies, sizes
    "bernoulli", "clone", "detach", "is_floating_point", "log_softmax", "multinomial", "numel", "softmax",
)


def _function_form(name):
    method = getattr(Tensor, name)

    def function(input, *args, **kwargs):
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(input).__name__}")
        return method(input, *args, **kwargs)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"tg.{name}(input, *args, **kwargs) is input.{name}(*args, **kwargs).\n\n{method.__doc__ or ''}"
    return function


FUNCTIONS = {name: _function_form(name) for name in METHOD_FORMS}


def pow(input, exponent):
    """input ** exponent; either may be a number (torch.pow(2, x) is 2 ** x)."""
    if not isinstance(input, Tensor) and not isinstance(exponent, Tensor):
        raise TypeError(f"pow(): expected a Tensor, got {type(input).__name__} and {type(exponent).__name__}")
    return input ** exponent


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) over `dim`, as Tensor.var and Tensor.mean."""
    return input.var(dim, unbiased, keepdim, correction=correction), _mean(input, dim, keepdim)


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) over `dim`, as Tensor.std and Tensor.mean."""
    return input.std(dim, unbiased, keepdim, correction=correction), _mean(input, dim, keepdim)


def _mean(input, dim, keepdim):
    return input.mean(None if isinstance(dim, bool) else dim, keepdim)


def broadcast_tensors(*tensors):
    """The tensors expanded to their common broadcast shape (views)."""
    shape = broadcast_shape("broadcast_tensors", *(t.shape for t in tensors))
    return tuple(t.expand(shape) for t in tensors)


def is_tensor(obj):
    return isinstance(obj, Tensor)


FUNCTIONS.update(pow=pow, var_mean=var_mean, std_mean=std_mean, broadcast_tensors=broadcast_tensors,
                 is_tensor=is_tensor)
