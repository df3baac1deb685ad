from egressaudit.cli import run

run()
