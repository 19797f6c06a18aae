from safedose.cli import run

run()
