"""Every explorer in ftlab.widgets raises its callback's error instead of swallowing it.

ipywidgets' own ``interactive`` catches an error in the callback (showing it in the widget's output
under IPython, logging a warning outside it), so a test that moves a control never saw it fail.
The explorers are found by name (``*_explorer`` in ftlab.widgets), so a new one is covered once
BUILD says how to build it; every ftlab function its callback calls is made to raise, then every
control is moved.
"""

from __future__ import annotations

import inspect

import IPython
import pytest

from ftlab import widgets

# how to build each explorer on small made-up inputs
BUILD = {
    "rank_alpha_explorer": dict(shapes=[(16, 32), (32, 16)], total_params=10_000, singular_values=[3.0, 2.0, 1.0],
                                r=4, alpha=8),
    "memory_explorer": dict(),
    "beta_explorer": dict(ref_probs=[0.5, 0.3, 0.2], rewards=[1.0, 0.0, -1.0], answers=["a", "b", "c"], beta=0.5,
                          measured={0.1: 0.25}),
}


class Broken(RuntimeError):
    pass


def _explorers():
    return sorted(name for name, obj in vars(widgets).items()
                  if name.endswith("_explorer") and inspect.isfunction(obj) and obj.__module__ == widgets.__name__)


def _ftlab_functions_called_by(callback):
    """The names in ftlab.widgets' namespace that ``callback`` calls and ftlab defines."""
    return sorted(name for name in callback.__code__.co_names
                  if callable(getattr(widgets, name, None))
                  and getattr(getattr(widgets, name), "__module__", "").startswith("ftlab"))


def _break(monkeypatch, names):
    def broken(*args, **kwargs):
        raise Broken("the explorer's function failed")

    for name in names:
        monkeypatch.setattr(widgets, name, broken)


def _move(control):
    """Give ``control`` a value other than its own."""
    before = control.value
    if hasattr(control, "options"):
        control.index = (control.index + 1) % len(control.options)
    elif isinstance(before, bool):
        control.value = not before
    elif hasattr(control, "base"):                  # a log slider: min and max are exponents
        low, high = control.base ** control.min, control.base ** control.max
        control.value = high if before != high else low
    elif hasattr(control, "min") and hasattr(control, "max"):
        control.value = control.max if before != control.max else control.min
    else:
        raise TypeError(f"test_widgets_raise does not know how to move a {type(control).__name__}; teach _move")


def test_every_explorer_has_a_recipe_and_the_three_lessons_explorers_are_found():
    found = _explorers()
    assert {"rank_alpha_explorer", "memory_explorer", "beta_explorer"} <= set(found)
    assert set(found) == set(BUILD), f"add a BUILD entry in tests/test_widgets_raise.py for {set(found) ^ set(BUILD)}"


@pytest.mark.parametrize("name", sorted(BUILD))
def test_an_explorer_raises_when_its_function_fails_whichever_control_moves(name, monkeypatch):
    explorer = getattr(widgets, name)(**BUILD[name])
    assert isinstance(explorer, widgets.explorer_class()), f"{name} must be built with widgets._interactive"
    called = _ftlab_functions_called_by(explorer.f)
    assert called, f"{name}'s callback calls no ftlab function"
    _break(monkeypatch, called)
    assert len(explorer.kwargs_widgets) >= 1
    for control in explorer.kwargs_widgets:
        before = control.value
        with pytest.raises(Broken, match="function failed"):
            _move(control)
        assert control.value != before, f"{name}: moving {control.description!r} did not change its value"
    # and building it with the function broken fails the cell that builds it
    with pytest.raises(Broken):
        getattr(widgets, name)(**BUILD[name])


def test_a_moved_control_reruns_the_callback_with_its_new_value(monkeypatch):
    seen = []
    real = widgets.beta_explorer_data
    monkeypatch.setattr(widgets, "beta_explorer_data", lambda beta, *a: seen.append(beta) or real(beta, *a))
    explorer = widgets.beta_explorer(**BUILD["beta_explorer"])
    (slider,) = explorer.kwargs_widgets
    slider.value = 2.0
    assert seen == [0.5, pytest.approx(2.0)]


def test_the_error_is_shown_in_the_explorers_output_before_it_is_raised(monkeypatch):
    shown = []

    class Shell:                                    # stands in for the kernel's IPython
        def showtraceback(self):
            import sys
            shown.append(sys.exc_info()[1])

    explorer = widgets.rank_alpha_explorer(**BUILD["rank_alpha_explorer"])
    _break(monkeypatch, ["rank_alpha_summary"])
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    with pytest.raises(Broken):
        explorer.kwargs_widgets[0].index = 0
    assert len(shown) == 1 and isinstance(shown[0], Broken)


def test_the_beta_explorers_default_is_a_value_its_slider_can_show():
    """A FloatLogSlider's browser view snaps to base**(min + k*step): a default off that grid is
    silently changed (and the callback rerun) the moment the explorer renders."""
    import math

    import ipywidgets

    explorer = widgets.beta_explorer(**{k: v for k, v in BUILD["beta_explorer"].items() if k != "beta"})  # default
    sliders = [c for c in explorer.children if isinstance(c, ipywidgets.FloatLogSlider)]
    assert sliders, "beta_explorer should have a log slider"
    for s in sliders:
        k = (math.log(s.value, s.base) - s.min) / s.step
        assert abs(k - round(k)) < 1e-9, f"{s.description} starts at {s.value}, off its slider's grid"
