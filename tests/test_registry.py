import subprocess
import sys
from pathlib import Path

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


def test_a_lazy_entry_imports_its_module_only_on_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lazy_widgets_for_test.py").write_text("WIDGET = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[int] = Registry("widget")
    reg.add_lazy("seven", "lazy_widgets_for_test:WIDGET")
    assert "seven" in reg and not reg.is_loaded("seven")
    assert "lazy_widgets_for_test" not in sys.modules
    with pytest.raises(SafedoseError, match=r"did you mean 'seven'\?"):
        reg.get("sevn")
    assert "lazy_widgets_for_test" not in sys.modules
    assert reg.get("seven") == 7 and reg.is_loaded("seven")
    assert "lazy_widgets_for_test" in sys.modules
    monkeypatch.delitem(sys.modules, "lazy_widgets_for_test")
    with pytest.raises(ValueError, match="already registered"):
        reg.add_lazy("seven", "lazy_widgets_for_test:WIDGET")


def test_judges_are_declared_without_importing_their_modules() -> None:
    harm, guard = "safedose.judges._harm", "safedose.judges._guard"
    code = (f"import sys, safedose.judges as j; assert {harm!r} not in sys.modules and {guard!r} not in sys.modules; "
            f"assert 'harm' in j.JUDGES and 'guard' in j.JUDGES; j.JUDGES.get('harm'); "
            f"assert {harm!r} in sys.modules and {guard!r} not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
