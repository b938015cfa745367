"""Starting Ray from the seer process (engine actors, sweeps on Ray)."""

from __future__ import annotations

import signal
import threading


def init_ray(**kwargs) -> None:
    """`ray.init(**kwargs)`, keeping the process's SIGTERM handler: Ray installs one that calls sys.exit(15), which
    would replace the CLI's (one line, exit 143, cleanups as on Ctrl-C)."""
    import ray

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(**kwargs)
    if before is not None:
        signal.signal(signal.SIGTERM, before)
