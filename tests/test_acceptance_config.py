"""The [acceptance] config section: defaults, overrides, and errors that name file, key and expectation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scannerd.config import ConfigError, default_ledger_path, load_config, parse_config


def test_defaults_follow_the_standard() -> None:
    a = parse_config({}).acceptance
    assert a.required == {"window": ("unionpay_medical", "unionpay_standard"), "kiosk": ("unionpay_medical", "unionpay_standard")}
    medical = a.kind("unionpay_medical")
    assert (medical.scan_kind, medical.scan_channel, medical.result_channel, medical.result_medical_insurance) == ("medical_insurance", "", "unionpay", True)
    standard = a.kind("unionpay_standard")
    assert (standard.scan_kind, standard.scan_channel, standard.result_statuses) == ("payment", "unionpay", ("paid", "refunded"))
    assert a.result_retention_h == 24.0 and a.result_ids_max > 0


def test_default_ledger_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/scannerd")
    assert default_ledger_path() == "/var/lib/scannerd/ledger.sqlite"  # under the unit's StateDirectory=
    monkeypatch.delenv("STATE_DIRECTORY")
    if os.geteuid() == 0:
        assert default_ledger_path() == "/var/lib/scannerd/ledger.sqlite"
    else:
        monkeypatch.setenv("XDG_STATE_HOME", "/home/t/.state")
        assert default_ledger_path() == "/home/t/.state/scannerd/ledger.sqlite"


def test_overrides_and_site_kinds(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_text(
        """
[acceptance]
ledger = "/srv/evidence/ledger.sqlite"
result_retention_h = 48
areas = ["outpatient", "emergency", "inpatient", "international"]

[acceptance.kind.wechat_medical]
scan_kind = "medical_insurance"
result_channel = "wechat"
result_medical_insurance = true

[acceptance.required]
kiosk = ["unionpay_medical", "wechat_medical"]
""",
        encoding="utf-8",
    )
    a = load_config(f).acceptance
    assert a.ledger == "/srv/evidence/ledger.sqlite" and a.result_retention_h == 48.0
    assert a.required["kiosk"] == ("unionpay_medical", "wechat_medical")
    assert a.required["window"] == ("unionpay_medical", "unionpay_standard")
    assert a.kind("wechat_medical").result_channel == "wechat"
    assert a.areas == ("outpatient", "emergency", "inpatient", "international")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ledger": 5}, "acceptance.ledger: expected a string, got 5"),
        ({"result_retention_h": 0}, "acceptance.result_retention_h: expected a number from 0.01 to 744"),
        ({"result_ids_max": "many"}, "acceptance.result_ids_max: expected an integer"),
        ({"required": {"desk": ["unionpay_medical"]}}, "acceptance.required.desk: expected a role: one of window | kiosk"),
        ({"required": {"kiosk": "unionpay_medical"}}, "acceptance.required.kiosk: expected a list of kind names"),
        ({"required": {"kiosk": ["alipay_medical"]}}, 'acceptance.required.kiosk[1]: expected a kind defined here or by default (unionpay_medical, unionpay_standard), got "alipay_medical"'),
        ({"areas": ["icu"]}, 'acceptance.areas[1]: expected one of outpatient | emergency | inpatient | international, got "icu"'),
        ({"kind": {"x": {}}}, "acceptance.kind.x.scan_kind: expected the kind of scan this counts"),
        ({"kind": {"X-1": {"scan_kind": "payment"}}}, "acceptance.kind.X-1: expected a kind name of lowercase letters"),
        ({"kind": {"x": {"scan_kind": "payment", "result_status": ["settled"]}}}, 'acceptance.kind.x.result_status[1]: expected one of paid | refunded | failed, got "settled"'),
        ({"kind": {"x": {"scan_kind": "payment", "colour": "red"}}}, "acceptance.kind.x.colour: unknown key"),
        ({"ledgr": "/x"}, "acceptance.ledgr: unknown key"),
    ],
)
def test_errors_name_file_key_and_expectation(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"acceptance": table}, "/etc/scannerd/config.toml")
    assert str(e.value).startswith(f"/etc/scannerd/config.toml: {message}"), str(e.value)
