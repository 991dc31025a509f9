"""`scannerd test` in Chinese on a real pty (the zh_CN locale), codes and config lines unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO, PtyScanner, wait_for, wechat_code


def test_scannerd_test_on_a_pty_speaks_chinese_under_zh_cn(tmp_path: Path) -> None:
    scanner = PtyScanner(tmp_path, "usb-Honeywell_1900-if00")
    config = tmp_path / "config.toml"
    config.write_text("")
    out_path = tmp_path / "out.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANG": "zh_CN.UTF-8", "LC_ALL": "", "LANGUAGE": "", "LC_MESSAGES": ""}
    code = wechat_code()
    try:
        with open(out_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "scannerd", "test", str(scanner.link), "-c", str(config),
                                     "--count", "1", "--timeout", "60"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            wait_for(lambda: "请扫一个码" in out_path.read_text(errors="replace") or proc.poll() is not None, 30)
            scanner.release_slave()
            scanner.write(f"]Q1{code}\r".encode(), 9600)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        scanner.close()
    text = out_path.read_text()
    assert f"{scanner.link}：已打开，9600 8N1，utf-8，已锁定；请扫一个码（Ctrl-C 停止）" in text, text
    assert "wechat/payment（规则 wechat.v1）" in text  # channel, kind and rule ids stay as they are
    assert "个字符" in text and "毫秒" in text and "共读取 1 次" in text
    assert "该扫码器发送的内容：" in text and "粘贴到配置文件（/etc/scannerd/config.toml）：" in text
    assert "[[scanner]]" in text and f'path = "{scanner.link}"' in text
    assert code not in text
