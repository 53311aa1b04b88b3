"""A tqdm bar per fit that costs nothing when nobody is watching.

Reading the running loss forces a device sync, so the bar refreshes only every
:data:`UPDATE_EVERY` steps, and when it is disabled (``quiet``, stderr redirected to a file or
pipe, or a rank other than 0) the trainer skips those reads altogether.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

UPDATE_EVERY = 50
"""Optimizer steps between bar refreshes (each one syncs the device once)."""


def wanted(quiet: bool, is_main: bool) -> bool:
    """Whether a bar should be drawn: not quiet, rank 0, and stderr is an interactive terminal."""
    return not quiet and is_main and sys.stderr.isatty()


class Progress:
    """Steps done out of a fit's total, with loss, accuracy and throughput in the postfix."""

    def __init__(self, total_steps: int, enabled: bool, desc: str = "train") -> None:
        self.enabled = enabled
        self._bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not enabled, leave=False,
                         dynamic_ncols=True)

    def advance(self, step: int, loss: float, accuracy: float | None, samples_per_second: float) -> None:
        """Move the bar to ``step`` (back, too, after a rollback) and show the latest running figures."""
        if not self.enabled:
            return
        postfix = {"loss": f"{loss:.4f}"}
        if accuracy is not None:
            postfix["acc"] = f"{accuracy:.2%}"
        postfix["samples/s"] = f"{samples_per_second:,.0f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)
        self._bar.refresh()  # updates are already rare; show each one

    def close(self) -> None:
        """Remove the bar from the terminal."""
        self._bar.close()
