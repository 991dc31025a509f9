import os
import sys
from pathlib import Path

# Tests import their helpers as a plain module (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The technician commands speak the locale's language (scannerd/i18n.py) and the tests read
# their English: a developer's zh_CN shell must not change what the suite sees. Tests of the
# Chinese output set LANG themselves.
for _var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
    os.environ.pop(_var, None)
os.environ["LANG"] = "C.UTF-8"
