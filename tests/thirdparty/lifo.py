"""``lifo://``: a deliberately broken backend (last in, first out) that conformance must fail.

Importing it registers the scheme, so ``queuekit conformance lifo:// --import thirdparty.lifo``
runs the suite against it.
"""

from __future__ import annotations

from typing import Any

import queuekit
from queuekit import QueueURL

from .dequeq import PARAMS, DequeQueue


class LifoQueue(DequeQueue):
    def _take(self) -> Any:
        return self._items.pop()


def open_lifo(url: QueueURL, /, **options: Any) -> LifoQueue:
    return LifoQueue(**queuekit.bind_params(url, PARAMS, options))


queuekit.register_backend("lifo", open_lifo, replace=True)
