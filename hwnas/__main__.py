from hwnas.cli import run

# Guarded: a spawned child process (the export worker, hwnas/search/export_worker.py) imports this
# module under another name to rebuild the parent's main module, and must not run the command again.
if __name__ == "__main__":
    run()
