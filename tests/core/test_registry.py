"""The generic registry: registration by decorator, the nearest-name hint on a miss, renamed entries, one-line
descriptions, and the read-only mapping that contract tests iterate over."""

import pytest

from seqlab.core.errors import BadInput
from seqlab.core.registry import Registry, nearest, unknown_name


def _shapes() -> Registry:
    shapes = Registry("shape")

    @shapes.register
    class Square:
        """Four equal sides.

        And four right angles."""

        name = "square"

    @shapes.register(name="circle", description="every point at one distance from the centre")
    class Round:
        pass

    @shapes.register
    class Triangle:
        name = "triangle"
        description = "three sides"

    return shapes


def test_register_by_decorator_keeps_the_entry_under_its_name():
    shapes = _shapes()
    assert shapes.names() == ["circle", "square", "triangle"]
    assert shapes.get("square").__name__ == "Square" and shapes.get("circle").__name__ == "Round"

    def hexagon():
        return 6

    assert shapes.register(hexagon, name="hexagon") is hexagon and shapes.get("hexagon")() == 6


def test_a_name_registered_twice_is_refused_and_a_nameless_entry_too():
    shapes = _shapes()
    square = shapes.get("square")
    assert shapes.register(square) is square  # the same entry again changes nothing

    class Impostor:
        name = "square"

    with pytest.raises(ValueError, match="shape 'square' is registered twice"):
        shapes.register(Impostor)
    assert shapes.get("square") is square

    class Nameless:
        pass

    with pytest.raises(TypeError, match="needs a name"):
        shapes.register(Nameless)


def test_get_names_the_nearest_on_a_near_miss():
    with pytest.raises(BadInput) as e:
        _shapes().get("sqare")
    assert str(e.value) == "unknown shape 'sqare' (did you mean 'square'?)"


def test_get_lists_the_known_names_on_a_far_miss():
    with pytest.raises(BadInput) as e:
        _shapes().get("zzz")
    assert str(e.value) == "unknown shape 'zzz' (known: circle, square, triangle)"
    in_order = Registry("step", sort_known=False)
    for step in ("warmup", "decay", "anneal"):
        in_order.register(lambda: None, name=step)
    with pytest.raises(BadInput) as e:
        in_order.get("zzz")
    assert str(e.value) == "unknown step 'zzz' (known: warmup, decay, anneal)"


def test_a_renamed_entry_answers_to_its_old_name_and_says_the_new_one_once(capsys):
    shapes = _shapes()
    shapes.alias("sqr", "square")
    assert shapes.get("sqr") is shapes.get("square") and shapes.renamed("sqr") == "square"
    assert shapes.renamed("square") is None
    assert "sqr" not in shapes and shapes.names() == ["circle", "square", "triangle"]  # listings show the new name
    assert capsys.readouterr().err == ""  # get resolves quietly
    assert shapes.canonical("sqr") == "square" and shapes.canonical("sqr") == "square"
    assert capsys.readouterr().err == "shape 'sqr' is now called 'square'\n"
    assert shapes.canonical("circle") == "circle" and capsys.readouterr().err == ""
    with pytest.raises(BadInput, match="did you mean 'circle'"):
        shapes.canonical("circel")


def test_describe_is_one_line():
    shapes = _shapes()
    assert shapes.describe("circle") == "every point at one distance from the centre"  # given at registration
    assert shapes.describe("triangle") == "three sides"  # the entry's own description
    assert shapes.describe("square") == "Four equal sides."  # the first line of its docstring
    with pytest.raises(BadInput, match="did you mean 'square'"):
        shapes.describe("squar")


def test_a_registry_reads_like_a_mapping():
    shapes = _shapes()
    assert "square" in shapes and "hexagon" not in shapes and len(shapes) == 3
    assert list(shapes) == ["square", "circle", "triangle"]  # registration order
    assert list(shapes.keys()) == list(shapes) and list(shapes.values()) == [shapes[n] for n in shapes]
    assert dict(shapes.items()) == {n: shapes.get(n) for n in shapes}
    assert sorted(shapes) == shapes.names()
    with pytest.raises(KeyError):
        shapes["hexagon"]


def test_the_did_you_mean_helpers():
    assert nearest("additon", ["addition", "copy"]) == "addition"
    assert nearest("zzz", ["addition", "copy"]) is None
    assert nearest("n_layer", ["n_layers", "d_model"], cutoff=0.5) == "n_layers"
    assert unknown_name("map", "revers", ["reverse", "perm"]) == "unknown map 'revers' (did you mean 'reverse'?)"
    assert unknown_name("map", "zzz", ["reverse", "perm"]) == "unknown map 'zzz' (known: reverse, perm)"
    assert unknown_name("map", "zzz", ["reverse"], known="reverse, and more") == \
        "unknown map 'zzz' (known: reverse, and more)"
