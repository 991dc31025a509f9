import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Tests import their helpers as a plain module (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Every daemon a test starts (and every in-process Service) writes its acceptance ledger under
# a throwaway STATE_DIRECTORY, never the machine's /var/lib/scannerd (tests run as root here).
# Set at import, before any test spawns a process: they all inherit it.
if "STATE_DIRECTORY" not in os.environ:
    _state = tempfile.mkdtemp(prefix="scannerd-test-state-")
    os.environ["STATE_DIRECTORY"] = _state
    atexit.register(shutil.rmtree, _state, ignore_errors=True)

# The technician commands speak the locale's language (scannerd/i18n.py) and the tests read
# their English: a developer's zh_CN shell must not change what the suite sees. Tests of the
# Chinese output set LANG themselves.
for _var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
    os.environ.pop(_var, None)
os.environ["LANG"] = "C.UTF-8"
