from egressaudit.cli import app

app(prog_name="egressaudit")
