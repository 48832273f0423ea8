"""``python -m callpipe.simulator [options]``: the same as ``callpipe sim serve``."""

from __future__ import annotations

import typer

from callpipe.simulator.commands import serve

if __name__ == "__main__":
    typer.run(serve)
