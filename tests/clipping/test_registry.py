"""A method is registered once, by defining its class; everything else reads the registry."""

import inspect

import pytest

from clipstudy import clipping
from clipstudy.clipping.base import REGISTRY, Clipper


def test_the_methods_are_registered_in_the_studys_order_then_the_librarys_two():
    assert clipping.METHODS == (
        "none", "value", "norm", "global_norm", "agc", "autoclip", "zclip", "adagc", "quantile"
    )  # fmt: skip


@pytest.mark.parametrize("name", clipping.METHODS)
def test_get_accepts_exactly_the_parameters_of_the_constructor(name):
    cls = REGISTRY[name]
    expected = (
        [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        if cls.__init__ is not object.__init__
        else []
    )
    assert list(cls.parameter_names()) == expected
    with pytest.raises(ValueError, match=f"unknown parameter\\(s\\) bogus; it takes: {', '.join(expected) or 'none'}"):
        clipping.get(name, bogus=1)


def test_every_method_counts_its_flops_and_clipping_methods_add_work():
    for name, cls in REGISTRY.items():
        assert isinstance(cls.flops_per_parameter, int)
        assert (cls.flops_per_parameter > 0) == (name != "none")


def test_an_eighth_method_is_one_class_and_then_known_everywhere_get_looks():
    class HalfClip(Clipper):
        """Halve every gradient (a toy method for this test)."""

        name = "half"
        flops_per_parameter = 1

        def __init__(self, factor: float = 0.5):
            self.factor = factor

    try:
        assert REGISTRY["half"] is HalfClip and HalfClip.parameter_names() == ("factor",)
        assert clipping.get("half", factor=0.25).factor == 0.25
    finally:
        del REGISTRY["half"]


def test_a_second_method_of_the_same_name_is_refused():
    with pytest.raises(TypeError, match="'zclip' is defined twice"):

        class Impostor(Clipper):  # noqa: F841
            name = "zclip"


def test_a_subclass_without_its_own_name_refines_a_method_without_registering():
    class Refined(clipping.GlobalNormClip):
        pass

    assert REGISTRY["global_norm"] is clipping.GlobalNormClip and Refined not in REGISTRY.values()
