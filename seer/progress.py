"""Progress bars, one rule for every long command: `progress=None` shows the bar only on a terminal (tqdm's
own test), True always, False never (a library call that should stay quiet)."""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(progress: bool | None, iterable=None, **kwargs) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one, with `total=`), shown as `progress` says."""
    return tqdm(iterable, disable=None if progress is None else not progress, **kwargs)
