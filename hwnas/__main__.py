from hwnas.cli import run

run()
