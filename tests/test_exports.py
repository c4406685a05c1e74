"""The public namespace: ``__all__`` lists exactly the public names, sorted."""

from __future__ import annotations

import tokstream


def test_all_matches_public_names() -> None:
    # dir() includes the trio shell's names, which load on first use.
    public = {
        name
        for name in dir(tokstream)
        if not name.startswith("_") and not isinstance(getattr(tokstream, name), type(tokstream))
    }
    public -= {"annotations"}
    assert set(tokstream.__all__) == public
    assert list(tokstream.__all__) == sorted(tokstream.__all__)


def test_public_names_have_docstrings() -> None:
    for name in tokstream.__all__:
        obj = getattr(tokstream, name)
        if callable(obj) and not isinstance(obj, type(tokstream)) and name != "Event":
            assert obj.__doc__, name


def test_every_error_is_a_tokstream_error() -> None:
    for name in tokstream.__all__:
        obj = getattr(tokstream, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, tokstream.TokstreamError), name


def test_every_error_class_lives_in_the_one_error_tree_module() -> None:
    errors = [
        obj
        for name in tokstream.__all__
        if isinstance(obj := getattr(tokstream, name), type) and issubclass(obj, Exception)
    ]
    assert {tokstream.ClientClosedError, tokstream.UsageError} <= set(errors)
    for cls in errors:
        assert cls.__module__ == "tokstream._exceptions", cls
        assert cls.__name__ in (tokstream._exceptions.__doc__ or ""), cls  # in the tree drawing
