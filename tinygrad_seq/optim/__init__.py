"""Optimizers with PyTorch's update rules, state and state-dict layout: SGD; the adaptive family
Adagrad, Adadelta, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam; the closure-driven LBFGS
(learning-rate schedules are in `optim.lr_scheduler`). The Optimizer base class (optimizer.py)
holds the parameter groups and per-parameter state; each optimizer updates arrays in place.
"""
from .optimizer import Optimizer
from .sgd import SGD
from .adaptive import Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, RAdam, RMSprop
from .lbfgs import LBFGS
from . import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
           "LBFGS", "lr_scheduler"]
