from hwnas.cli import run

# Guarded: importing the module (a tool, a multiprocessing spawn) must not run the command.
if __name__ == "__main__":
    run()
