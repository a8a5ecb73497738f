"""A serializer that will not load one item, as a payload another program wrote would not."""

from __future__ import annotations

import pickle
from typing import Any

BAD = "bad"


class Refused(Exception):
    """What Refusing.loads raises: not a queuekit error, as a third-party serializer's."""


class Refusing:
    """Pickles everything and refuses to load the item ``BAD``."""

    name = "refusing"

    def dumps(self, item: Any) -> bytes:
        return pickle.dumps(item)

    def loads(self, data: bytes) -> Any:
        item = pickle.loads(data)
        if item == BAD:
            raise Refused("this item is refused")
        return item
