"""The lab's web pages in JupyterLab's launcher, through jupyter-server-proxy.

binder/start puts this folder on JUPYTER_CONFIG_PATH, so every `jupyter lab` it wraps (Binder's
and the rehearsal's) loads this file. jupyter-server-proxy starts each server on first visit:
  <base_url>lab-dashboard/dashboard   the live dashboard and the booking API (`labkit api`)
  <base_url>bull-board/               bull-board on the lab's Redis, where Node and its packages are
"""

import shutil
import sys
from pathlib import Path

BULL_BOARD = Path(__file__).resolve().parent.parent / "tools" / "bull-board"

c = get_config()  # noqa: F821 - Jupyter defines get_config() when it loads this file

servers = {
    "lab-dashboard": {
        # `labkit api`, with the proxy's prefix as the ASGI root path so /docs finds its schema.
        "command": [
            sys.executable, "-m", "uvicorn", "--factory", "labkit.api.app:create_app",
            "--host", "127.0.0.1", "--port", "{port}",
            "--root-path", "{base_url}lab-dashboard", "--log-level", "warning",
        ],
        "timeout": 60,
        "launcher_entry": {"title": "Booking dashboard", "path_info": "lab-dashboard/dashboard"},
    },
}
if shutil.which("node") and (BULL_BOARD / "node_modules").is_dir():
    servers["bull-board"] = {
        # bull-board writes its own base path into its page, so it sees the full URL.
        "command": ["node", str(BULL_BOARD / "server.js")],
        "absolute_url": True,
        "environment": {"BULL_BOARD_PORT": "{port}", "BULL_BOARD_BASE_PATH": "{base_url}bull-board"},
        "timeout": 30,
        "launcher_entry": {"title": "bull-board (BullMQ lane)"},
    }
c.ServerProxy.servers = servers
