import pytest

from safedose.errors import SafedoseError
from safedose.registry import Registry


def test_get_and_typo_suggestion() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("saferpaca-safety", 1)

    @reg.register("dolly-15k")
    def _f() -> int:
        return 2

    assert reg.get("saferpaca-safety") == 1
    assert list(reg) == ["saferpaca-safety", "dolly-15k"]
    with pytest.raises(SafedoseError, match=r"unknown widget 'dolly15k'; did you mean 'dolly-15k'\?"):
        reg.get("dolly15k")
    with pytest.raises(SafedoseError) as e:
        reg.get("zzz")
    assert "did you mean" not in str(e.value)


def test_duplicate_names_rejected() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
