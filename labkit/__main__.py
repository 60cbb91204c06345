import sys

# A pool's worker process imports only the worker command (see labkit.worker_cli).
if sys.argv[1:2] == ["worker"]:
    from labkit.worker_cli import app
else:
    from labkit.cli import app

app(prog_name="labkit")
