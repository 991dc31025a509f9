"""Chinese for technicians: the catalog covers every message, keeps every placeholder, and the
locale picks the language the way gettext does."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest

from scannerd import i18n
from scannerd.i18n import PoError, catalog, display_width, language, ljust, parse_po

PACKAGE = Path(i18n.__file__).resolve().parent
PO = PACKAGE / "locale" / "zh_CN" / "LC_MESSAGES" / "scannerd.po"


def messages_in_source() -> dict[str, str]:
    """Every literal passed to _() in the package → where it is."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.setdefault(node.args[0].value, f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def fields(text: str) -> list[tuple[str, str, str]]:
    return sorted((name, spec, conv or "") for _lit, name, spec, conv in string.Formatter().parse(text) if name is not None)


def test_every_message_has_a_chinese_translation() -> None:
    zh = catalog("zh_CN")
    missing = {m: where for m, where in messages_in_source().items() if m not in zh}
    assert not missing, "add these to scannerd/locale/zh_CN/LC_MESSAGES/scannerd.po:\n" + "\n".join(
        f"  {where}: {m!r}" for m, where in missing.items())


def test_translations_keep_every_placeholder_and_no_entry_is_left_empty() -> None:
    zh = catalog("zh_CN")
    assert len(zh) >= len(messages_in_source())
    for msgid, msgstr in zh.items():
        assert fields(msgstr) == fields(msgid), msgid
        assert msgstr.strip(), msgid
    # No fuzzy or empty entry hides in the file (parse_po would silently drop them).
    raw = PO.read_text(encoding="utf-8")
    assert "#, fuzzy" not in raw
    assert raw.count('\nmsgid "') == len(zh) + 1  # + the header entry


def test_catalog_is_shipped_as_package_data() -> None:
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert '"locale/*/LC_MESSAGES/*.po"' in pyproject


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
        ({"LANG": "zh_CN.GB18030"}, "zh_CN"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "zh_TW.UTF-8"}, "en"),  # traditional script readers: not the simplified catalog
        ({"LANG": "zh_CN.UTF-8", "LC_ALL": "C"}, "en"),  # LC_ALL overrides LANG
        ({"LANG": "C", "LC_MESSAGES": "zh_CN.UTF-8"}, "zh_CN"),
        ({"LC_ALL": "zh_CN.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}, "zh_CN"),
        ({"LANGUAGE": "zh_CN:en", "LANG": "en_US.UTF-8"}, "zh_CN"),
        ({"LANGUAGE": "fr:zh_CN", "LANG": "en_US.UTF-8"}, "zh_CN"),
        ({"LANGUAGE": "en", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LANGUAGE": "", "LC_ALL": "", "LANG": "zh_CN.utf8"}, "zh_CN"),
        ({"LANG": "zh_SG.UTF-8"}, "zh_CN"),
        ({"LANG": "C.UTF-8"}, "en"),
    ],
)
def test_language_from_the_environment(env: dict[str, str], lang: str) -> None:
    assert language(env) == lang


def test_underscore_follows_the_current_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert i18n._("SERIAL PORTS") == "串口"
    assert i18n._("a message nobody translated") == "a message nobody translated"
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert i18n._("SERIAL PORTS") == "SERIAL PORTS"


def test_po_parser_reads_continuations_escapes_and_skips_fuzzy_and_empty() -> None:
    text = '''# comment
msgid ""
msgstr "Content-Type: text/plain; charset=UTF-8\\n"

msgid "one"
msgstr "一"

msgid ""
"two "
"lines"
msgstr "两"
"行\\n\\"引号\\""

#, fuzzy
msgid "guess"
msgstr "猜"

msgid "untranslated"
msgstr ""
'''
    assert parse_po(text) == {"one": "一", "two lines": '两行\n"引号"'}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('msgid "a"\nmsgstr b\n', "x.po:2"),
        ('msgstr "b"\n', "x.po:1"),
        ('"orphan"\n', "x.po:1"),
        ('msgid "a"\nmsgid_plural "as"\n', "x.po:2"),
        ('msgid "a\\q"\nmsgstr "b"\n', "x.po:1"),
        ('msgid "a"b"\nmsgstr "b"\n', "x.po:1"),
    ],
)
def test_po_parser_names_file_and_line_of_a_bad_entry(text: str, where: str) -> None:
    with pytest.raises(PoError, match=where):
        parse_po(text, "x.po")


def test_terminal_width_of_chinese_text() -> None:
    assert display_width("串口") == 4
    assert display_width("USB 设备") == 8
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    assert ljust("设备", 6) == "设备  "
    assert ljust("device", 3) == "device"
