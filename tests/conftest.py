"""Shared test configuration: hypothesis profiles, import paths, and the `device` fixture.

HYPOTHESIS_PROFILE=ci (default) keeps the whole suite well under five minutes on two
cores; HYPOTHESIS_PROFILE=thorough runs many more examples per property. Skipped tests are
counted by reason at the end of a run, a line per reason (`-rs` lists each test instead).
"""
import collections
import os
import sys
import warnings

import pytest
from hypothesis import HealthCheck, settings

_TESTS = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(_TESTS), _TESTS):  # the package (when not installed) and tests/ helpers
    if _path not in sys.path:
        sys.path.insert(0, _path)

import fake_device  # noqa: E402  (needs the paths above)
from devices import DEVICE_PARAMS  # noqa: E402

# When a property fails, hypothesis imports libcst to suggest a patch; in some environments that
# import emits a DeprecationWarning (mypy_extensions.TypedDict), which filterwarnings=error turns
# into an INTERNALERROR hiding the real failure. Import it once here, quietly.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import libcst.metadata  # noqa: F401
    except Exception:  # not installed: hypothesis then skips the patch suggestion
        pass

settings.register_profile("ci", max_examples=20, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=400, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

fake_device.register()


@pytest.fixture(scope="session", params=DEVICE_PARAMS)
def device(request):
    """A device string: "cpu", "fake" (a CuPy-like array type, tests/fake_device.py), "cuda" with a GPU."""
    return request.param


def pytest_terminal_summary(terminalreporter):
    """After the run: how many tests were skipped for each reason, most frequent first."""
    if "s" in terminalreporter.reportchars:  # -rs / -ra: pytest lists every skipped test itself
        return
    reasons = collections.Counter(report.longrepr[2].removeprefix("Skipped: ")
                                  for report in terminalreporter.stats.get("skipped", ())
                                  if isinstance(report.longrepr, tuple))
    if reasons:
        terminalreporter.write_sep("-", f"{sum(reasons.values())} skipped, by reason (-rs lists each test)")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:6d}  {reason}")
