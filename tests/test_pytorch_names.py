"""At least 95% of the names PyTorch RNN programs commonly use (tests/pytorch_names.py) exist here,
and every one that does not is accounted for: deliberately not provided, with the reason."""
import importlib

import tinygrad_seq as tg
from pytorch_names import GROUPS, NOT_PROVIDED


def _present(root, name):
    obj = tg.zeros(1) if root == "Tensor" else importlib.import_module("tinygrad_seq" + (f".{root}" if root else ""))
    for part in name.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _qualified(root, name):
    return name if root in ("", "Tensor") else f"{root}.{name}"


MISSING = {group: [_qualified(root, n) for n in names if not _present(root, n)]
           for group, (root, names) in GROUPS.items()}
ALL_MISSING = [name for names in MISSING.values() for name in names]
TOTAL = sum(len(names) for _, names in GROUPS.values())


def _report():
    lines = [f"{TOTAL - len(ALL_MISSING)}/{TOTAL} names present ({1 - len(ALL_MISSING) / TOTAL:.1%})"]
    for group, (_, names) in GROUPS.items():
        lines.append(f"  {group}: {len(names) - len(MISSING[group])}/{len(names)}"
                     + (f", missing {', '.join(MISSING[group])}" if MISSING[group] else ""))
    return "\n".join(lines)


def test_every_missing_name_is_accounted_for():
    print(_report())
    unexplained = [name for name in ALL_MISSING if name not in NOT_PROVIDED]
    assert not unexplained, f"missing and not accounted for: {unexplained}\n{_report()}"
    stale = [name for name in NOT_PROVIDED if name not in ALL_MISSING]
    assert not stale, f"present now, drop from NOT_PROVIDED: {stale}"
    assert all(len(set(names)) == len(names) for _, names in GROUPS.values())


def test_at_least_95_percent_of_the_common_names_are_present():
    print(_report())
    assert len(ALL_MISSING) <= 0.05 * TOTAL, _report()
