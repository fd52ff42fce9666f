"""One root for qmonitor's own exceptions."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import qmonitor
from qmonitor import QMonitorError, QMPError, StateError
from qmonitor.core.jobs import JobStateError


def public_exception_classes() -> list[type[BaseException]]:
    """Every public exception class defined in a module of the package."""
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(qmonitor.__path__, "qmonitor."):
        if module_info.name == "qmonitor.__main__":  # runs the program
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.append(value)
    return found


def test_every_exception_qmonitor_defines_derives_from_one_root() -> None:
    classes = public_exception_classes()
    assert len(classes) > 10  # the walk found the package's modules
    outside = [
        f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, QMonitorError)
    ]
    assert outside == []


def test_state_errors_are_not_assertions() -> None:
    """A job moved where its table forbids is a StateError (a RuntimeError, as before), not an
    AssertionError that ``python -O`` readers would take for an ``assert``."""
    assert issubclass(JobStateError, StateError)
    assert issubclass(StateError, RuntimeError)
    assert not issubclass(JobStateError, AssertionError)
    assert issubclass(QMPError, QMonitorError)
