"""The router raises its own open-files limit: each stream holds two sockets, and 1024 is a common soft limit."""

import resource
import subprocess
import sys

SCRIPT = """
import resource
from router.__main__ import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
raise_open_files_limit()
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_soft_limit_is_raised_towards_the_hard_one():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    expected = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    assert int(out) == expected > 256
