"""udev/70-scannerd.rules: syntax checked line by line, then evaluated against device trees.

udevadm is not needed (nor, before systemd 253, able) to check a rules file offline, so this test
carries a small evaluator of the udev rule language for the keys the file uses: matches with
globs and '|' alternatives, parent keys (SUBSYSTEMS, ATTRS, …) walking up the device chain the
way udev does (all parent keys of a rule must hold on one ancestor-or-self), ENV/GROUP/MODE/
SYMLINK assignments with $env{}/$attr{}/%b substitution, GOTO/LABEL, and IMPORT{builtin}="usb_id"
(vendor/product/serial of the nearest USB device, interface number).  The device trees model
what sysfs shows for each node type.  Where udevadm with `verify` exists (systemd ≥ 253) it is
run as well.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "udev" / "70-scannerd.rules"
SYSUSERS = REPO / "systemd" / "scannerd.sysusers"

# --- parsing -----------------------------------------------------------------------------------

# udev(7), systemd 252: which keys exist, whether they take {attr}, and which ops they allow.
MATCH_OPS = {"==", "!="}
ASSIGN_OPS = {"=", "+=", "-=", ":="}
KEYS: dict[str, tuple[str, set[str]]] = {
    # key: (attribute: "required" | "optional" | "none", allowed ops)
    "ACTION": ("none", MATCH_OPS),
    "DEVPATH": ("none", MATCH_OPS),
    "KERNEL": ("none", MATCH_OPS),
    "KERNELS": ("none", MATCH_OPS),
    "SUBSYSTEM": ("none", MATCH_OPS),
    "SUBSYSTEMS": ("none", MATCH_OPS),
    "DRIVER": ("none", MATCH_OPS),
    "DRIVERS": ("none", MATCH_OPS),
    "TAGS": ("none", MATCH_OPS),
    "RESULT": ("none", MATCH_OPS),
    "PROGRAM": ("none", MATCH_OPS),
    "TEST": ("optional", MATCH_OPS),
    "ATTRS": ("required", MATCH_OPS),
    "CONST": ("required", MATCH_OPS),
    "NAME": ("none", MATCH_OPS | ASSIGN_OPS),
    "SYMLINK": ("none", MATCH_OPS | ASSIGN_OPS),
    "TAG": ("none", MATCH_OPS | ASSIGN_OPS),
    "ATTR": ("required", MATCH_OPS | {"=", ":="}),
    "SYSCTL": ("required", MATCH_OPS | {"=", ":="}),
    "ENV": ("required", MATCH_OPS | {"=", "+=", ":="}),
    "OWNER": ("none", {"=", ":="}),
    "GROUP": ("none", {"=", ":="}),
    "MODE": ("none", {"=", ":="}),
    "SECLABEL": ("required", {"=", "+=", ":="}),
    "RUN": ("optional", {"=", "+=", ":="}),
    "IMPORT": ("required", MATCH_OPS | {"="}),
    "OPTIONS": ("none", {"=", "+=", ":="}),
    "LABEL": ("none", {"="}),
    "GOTO": ("none", {"="}),
}
PARENT_KEYS = {"KERNELS", "SUBSYSTEMS", "DRIVERS", "ATTRS", "TAGS"}
TOKEN = re.compile(r'([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str


def parse_line(line: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while True:
        m = TOKEN.match(line, pos)
        assert m, f"malformed at column {pos}: {line!r}"
        tokens.append(Token(m.group(1), m.group(2), m.group(3), m.group(4)))
        pos = m.end()
        rest = line[pos:]
        if not rest.strip():
            return tokens
        sep = re.match(r"\s*,\s*", rest)
        assert sep, f"expected ',' at column {pos}: {line!r}"
        pos += sep.end()


def parse_rules(text: str) -> list[tuple[int, list[Token]]]:
    rules = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert not raw.rstrip().endswith("\\"), f"line {n}: continuation lines are not used here"
        rules.append((n, parse_line(line)))
    return rules


def test_every_line_is_well_formed_and_uses_known_keys() -> None:
    rules = parse_rules(RULES.read_text())
    assert len(rules) >= 15
    labels: dict[str, int] = {}
    gotos: list[tuple[int, str]] = []
    for n, tokens in rules:
        for t in tokens:
            assert t.key in KEYS, f"line {n}: unknown key {t.key}"
            attr_rule, ops = KEYS[t.key]
            assert t.op in ops, f"line {n}: {t.key} does not take {t.op}"
            if attr_rule == "required":
                assert t.attr, f"line {n}: {t.key} needs {{attribute}}"
            if attr_rule == "none":
                assert t.attr is None, f"line {n}: {t.key} takes no {{attribute}}"
            if t.key == "LABEL":
                labels[t.value] = n
            if t.key == "GOTO":
                gotos.append((n, t.value))
            if t.key == "IMPORT":
                assert t.attr in {"program", "builtin", "file", "db", "cmdline", "parent"}
            if t.key == "MODE":
                assert re.fullmatch(r"0[0-7]{3}", t.value)
        # A rule that only matches (no action) would be dead weight.
        assert any(t.op in ASSIGN_OPS or t.key in {"LABEL", "GOTO"} for t in tokens), n
    for n, label in gotos:
        assert label in labels and labels[label] > n, f"line {n}: GOTO {label} has no LABEL after it"


def test_group_is_the_sysusers_group() -> None:
    groups = {t.value for _, ts in parse_rules(RULES.read_text()) for t in ts if t.key == "GROUP"}
    sysusers = [line.split() for line in SYSUSERS.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert groups == {"scannerd"}
    assert any(f[0] == "u" and f[1] == "scannerd" for f in sysusers)


@pytest.mark.skipif(shutil.which("udevadm") is None, reason="udevadm not installed (package udev)")
def test_udevadm_verify(tmp_path: Path) -> None:
    helptext = subprocess.run(["udevadm", "--help"], capture_output=True, text=True).stdout
    if "verify" not in helptext:
        pytest.skip("udevadm has no 'verify' (systemd < 253); the parser test covers syntax")
    r = subprocess.run(["udevadm", "verify", "--resolve-names=never", str(RULES)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- evaluation --------------------------------------------------------------------------------


@dataclass
class Dev:
    """One sysfs device: what udev sees of it."""

    subsystem: str
    kernel: str
    devtype: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    parent: Dev | None = None
    driver: str | None = None

    def chain(self) -> list[Dev]:
        out: list[Dev] = []
        d: Dev | None = self
        while d is not None:
            out.append(d)
            d = d.parent
        return out


@dataclass
class Result:
    env: dict[str, str]
    group: str | None = None
    mode: str | None = None
    symlinks: list[str] = field(default_factory=list)

    @property
    def tagged(self) -> bool:
        return self.env.get("SCANNERD") == "1"


def glob(pattern: str, value: str | None) -> bool:
    value = value or ""
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def usb_id(dev: Dev, env: dict[str, str]) -> None:
    """What udev's usb_id builtin exports: data of the nearest usb_device ancestor-or-self."""
    usb = next((d for d in dev.chain() if d.subsystem == "usb" and d.devtype == "usb_device"), None)
    if usb is None:
        return
    if dev is not usb:
        iface = next((d for d in dev.chain() if d.devtype == "usb_interface"), None)
        if iface is None:
            return
        env["ID_USB_INTERFACE_NUM"] = iface.attrs.get("bInterfaceNumber", "")
    env["ID_BUS"] = "usb"
    env["ID_VENDOR_ID"] = usb.attrs["idVendor"]
    env["ID_MODEL_ID"] = usb.attrs["idProduct"]
    serial = usb.attrs.get("serial", "").strip()
    if serial:
        # udev_replace_whitespace() then udev_replace_chars(): runs of blanks → one "_",
        # anything outside 0-9A-Za-z#+-.:=@_ (a "/" included) → "_"
        env["ID_SERIAL_SHORT"] = re.sub(r"[^0-9A-Za-z#+\-.:=@_]", "_", re.sub(r"\s+", "_", serial))


def evaluate(rules_text: str, dev: Dev, action: str = "add", preset_usb_id: bool = False,
             env: dict[str, str] | None = None) -> Result:
    env = dict(dev.env if env is None else env)
    if dev.devtype:
        env.setdefault("DEVTYPE", dev.devtype)
    if preset_usb_id:  # as Debian's 50-/60- rules do before ours for usb, input and tty
        usb_id(dev, env)
    res = Result(env=env)
    rules = parse_rules(rules_text)
    i = 0
    while i < len(rules):
        _, tokens = rules[i]
        i += 1
        parent: Dev | None = None
        ok = True
        # own keys
        for t in tokens:
            if t.op not in MATCH_OPS or t.key in PARENT_KEYS:
                continue
            if t.key == "ACTION":
                value: str | None = action
            elif t.key == "SUBSYSTEM":
                value = dev.subsystem
            elif t.key == "KERNEL":
                value = dev.kernel
            elif t.key == "DRIVER":
                value = dev.driver
            elif t.key == "ENV":
                assert t.attr is not None
                value = env.get(t.attr, "")
            elif t.key == "ATTR":
                assert t.attr is not None
                value = dev.attrs.get(t.attr)
            else:
                raise AssertionError(f"evaluator lacks match key {t.key}")
            if glob(t.value, value) != (t.op == "=="):
                ok = False
                break
        if not ok:
            continue
        # parent keys: the first ancestor-or-self on which all of them hold
        pkeys = [t for t in tokens if t.key in PARENT_KEYS and t.op in MATCH_OPS]
        if pkeys:
            for cand in dev.chain():
                def holds(t: Token, c: Dev = cand) -> bool:
                    v = {"SUBSYSTEMS": c.subsystem, "KERNELS": c.kernel, "DRIVERS": c.driver,
                         "ATTRS": c.attrs.get(t.attr or "")}.get(t.key)
                    if t.key == "ATTRS" and v is None:
                        return False  # no such attribute: no match, even for !=
                    return glob(t.value, v) == (t.op == "==")
                if all(holds(t) for t in pkeys):
                    parent = cand
                    break
            else:
                continue

        def subst(s: str, p: Dev | None = parent) -> str:
            s = re.sub(r"\$env\{([^}]*)\}", lambda m: env.get(m.group(1), ""), s)
            s = re.sub(r"\$attr\{([^}]*)\}",
                       lambda m: dev.attrs.get(m.group(1)) or (p.attrs.get(m.group(1), "") if p else ""), s)
            return s.replace("%b", p.kernel if p else "").replace("$id", p.kernel if p else "")

        for t in tokens:
            if t.op in MATCH_OPS:
                continue
            if t.key == "ENV":
                assert t.attr is not None
                env[t.attr] = subst(t.value)
            elif t.key == "GROUP":
                res.group = subst(t.value)
            elif t.key == "MODE":
                res.mode = t.value
            elif t.key == "SYMLINK":
                links = subst(t.value).split()
                res.symlinks = links if t.op in {"=", ":="} else res.symlinks + links
            elif t.key == "IMPORT":
                assert (t.attr, t.value) == ("builtin", "usb_id"), "evaluator lacks this import"
                usb_id(dev, env)
            elif t.key == "GOTO":
                i = next(k for k, (_, ts) in enumerate(rules)
                         if any(x.key == "LABEL" and x.value == t.value for x in ts))
            elif t.key in {"LABEL", "TAG", "OPTIONS"}:
                pass
            else:
                raise AssertionError(f"evaluator lacks assignment key {t.key}")
    return res


# --- device trees, shaped like sysfs --------------------------------------------------------------


def usb_device(kernel: str, vid: str, pid: str, serial: str | None = None,
               parent: Dev | None = None) -> Dev:
    attrs = {"idVendor": vid, "idProduct": pid}
    if serial is not None:
        attrs["serial"] = serial
    return Dev("usb", kernel, "usb_device", attrs, parent=parent, driver="usb")


def hid_keyboard(usb: Dev, event: str, ifnum: str = "00") -> tuple[Dev, Dev, Dev]:
    """usb_device → interface → hid → inputN → eventN, and the hidraw beside it."""
    iface = Dev("usb", f"{usb.kernel}:1.{int(ifnum)}", "usb_interface",
                {"bInterfaceNumber": ifnum, "bInterfaceClass": "03"}, parent=usb, driver="usbhid")
    hid = Dev("hid", f"0003:{usb.attrs['idVendor'].upper()}:{usb.attrs['idProduct'].upper()}.0001",
              parent=iface, driver="hid-generic")
    inp = Dev("input", "input17", attrs={"name": "keyboard"}, parent=hid)
    ev = Dev("input", event, env={"ID_INPUT": "1", "ID_INPUT_KEY": "1", "ID_INPUT_KEYBOARD": "1"},
             parent=inp)
    raw = Dev("hidraw", "hidraw2", parent=hid)
    return ev, raw, inp


def acm_tty(usb: Dev, kernel: str = "ttyACM0", driver: str = "cdc_acm") -> Dev:
    iface = Dev("usb", f"{usb.kernel}:1.0", "usb_interface", {"bInterfaceNumber": "00"},
                parent=usb, driver=driver)
    return Dev("tty", kernel, parent=iface)


ROOT_HUB = Dev("usb", "usb1", "usb_device", {"idVendor": "1d6b", "idProduct": "0002"}, driver="usb")

HONEYWELL = usb_device("1-1.4", "0c2e", "0b61", "17281B4E3C", parent=ROOT_HUB)
HONEYWELL_EVENT, HONEYWELL_HIDRAW, HONEYWELL_INPUT = hid_keyboard(HONEYWELL, "event5")
NEWLAND = usb_device("1-2", "1eab", "8203", None, parent=ROOT_HUB)  # no serial: named by port
NEWLAND_TTY = acm_tty(NEWLAND)
ZEBRA_HIDPOS = usb_device("1-3", "05e0", "1300", "S/N 1234 5678", parent=ROOT_HUB)
DATALOGIC_EVENT, DATALOGIC_HIDRAW, _ = hid_keyboard(
    usb_device("1-6", "05f9", "2206", "G21A01234", parent=ROOT_HUB), "event9", ifnum="01")

LOGITECH = usb_device("1-7", "046d", "c31c", None, parent=ROOT_HUB)
LOGITECH_EVENT, LOGITECH_HIDRAW, _ = hid_keyboard(LOGITECH, "event3")
# An ordinary keyboard in a hub/dock whose own vendor id is a scanner vendor's: ATTRS{idVendor}
# would find the hub walking up; the rules must not.
SCANNER_VENDOR_HUB = usb_device("1-5", "0c2e", "0a01", None, parent=ROOT_HUB)
KEYBOARD_IN_HUB_EVENT, KEYBOARD_IN_HUB_HIDRAW, _ = hid_keyboard(
    usb_device("1-5.1", "046d", "c31c", None, parent=SCANNER_VENDOR_HUB), "event4")
PS2_KEYBOARD = Dev("input", "event0", env={"ID_INPUT_KEYBOARD": "1"},
                   parent=Dev("input", "input0", parent=Dev("serio", "serio0", driver="atkbd")))
FTDI_TTY = acm_tty(usb_device("1-8", "0403", "6001", "A10K1234", parent=ROOT_HUB),
                   "ttyUSB0", "ftdi_sio")
CH340 = usb_device("1-9", "1a86", "7523", None, parent=ROOT_HUB)
CH340_TTY = acm_tty(CH340, "ttyUSB1", "ch341")
BUILTIN_UART = Dev("tty", "ttyS0", parent=Dev("platform", "serial8250"))

SCANNER_NODES = {
    "honeywell event": (HONEYWELL_EVENT, "scanner/honeywell-17281B4E3C-event-if00"),
    "honeywell hidraw": (HONEYWELL_HIDRAW, "scanner/honeywell-17281B4E3C-hidraw-if00"),
    "honeywell usb": (HONEYWELL, "scanner/honeywell-17281B4E3C-usb"),
    "newland ttyACM": (NEWLAND_TTY, "scanner/newland-port-1-2"),
    "zebra usb (HID-POS)": (ZEBRA_HIDPOS, "scanner/zebra-S_N_1234_5678-usb"),
    "datalogic event": (DATALOGIC_EVENT, "scanner/datalogic-G21A01234-event-if01"),
    "datalogic hidraw": (DATALOGIC_HIDRAW, "scanner/datalogic-G21A01234-hidraw-if01"),
}
NOT_SCANNERS = {
    "logitech keyboard event": LOGITECH_EVENT,
    "logitech keyboard hidraw": LOGITECH_HIDRAW,
    "logitech keyboard usb": LOGITECH,
    "keyboard in a 0c2e hub, event": KEYBOARD_IN_HUB_EVENT,
    "keyboard in a 0c2e hub, hidraw": KEYBOARD_IN_HUB_HIDRAW,
    "the 0c2e hub's input-less interface": Dev("usb", "1-5:1.0", "usb_interface",
                                               {"bInterfaceNumber": "00"}, parent=SCANNER_VENDOR_HUB),
    "ps/2 keyboard": PS2_KEYBOARD,
    "ftdi ttyUSB": FTDI_TTY,
    "ch340 ttyUSB without a local rule": CH340_TTY,
    "built-in ttyS0": BUILTIN_UART,
    "honeywell inputN (no node)": HONEYWELL_INPUT,
}


@pytest.mark.parametrize("preset", [False, True], ids=["rules-import-usb_id", "debian-preset"])
@pytest.mark.parametrize("name", sorted(SCANNER_NODES))
def test_scanner_nodes_match(name: str, preset: bool) -> None:
    dev, link = SCANNER_NODES[name]
    res = evaluate(RULES.read_text(), dev, preset_usb_id=preset)
    assert res.tagged, name
    assert (res.group, res.mode) == ("scannerd", "0660")
    assert res.symlinks == [link]
    assert res.env["SCANNERD_VENDOR"] == link.split("/")[1].split("-")[0]


@pytest.mark.parametrize("preset", [False, True], ids=["rules-import-usb_id", "debian-preset"])
@pytest.mark.parametrize("name", sorted(NOT_SCANNERS))
def test_ordinary_devices_untouched(name: str, preset: bool) -> None:
    res = evaluate(RULES.read_text(), NOT_SCANNERS[name], preset_usb_id=preset)
    assert not res.tagged
    assert res.group is None and res.mode is None and res.symlinks == []
    assert "SCANNERD_VENDOR" not in res.env


def test_remove_events_are_ignored() -> None:
    res = evaluate(RULES.read_text(), HONEYWELL_EVENT, action="remove")
    assert not res.tagged and res.group is None


def test_evaluator_sees_the_attrs_pitfall() -> None:
    """Sanity of the evaluator: a naive ATTRS rule does match the keyboard behind the hub."""
    naive = 'SUBSYSTEM=="input", ATTRS{idVendor}=="0c2e", ENV{SCANNERD}="1"\n'
    assert evaluate(naive, KEYBOARD_IN_HUB_EVENT).tagged
    assert not evaluate(naive, LOGITECH_EVENT).tagged


def test_documented_local_rule_adds_a_scanner() -> None:
    """The 'ADDING A SCANNER' example in the header, as a 69-… file run before ours, works."""
    text = RULES.read_text()
    section = text[text.index("# ADDING A SCANNER"):]
    example = [line[1:].strip() for line in section.splitlines()
               if re.match(r"#\s+(SUBSYSTEMS|ENV)\{?.*==", line)]
    assert len(example) == 2, example
    local = "\n".join(example) + "\n"
    res = evaluate(local + text, CH340_TTY)
    assert res.tagged and res.group == "scannerd"
    assert res.symlinks == ["scanner/ch340-port-1-9"]
    # …and it still does not pull in a different product of the same vendor
    other = acm_tty(usb_device("1-10", "1a86", "55d4", None, parent=ROOT_HUB), "ttyACM3")
    assert not evaluate(local + text, other).tagged
