# The compiled part of shm:// (_shm_ring.c), where it was built.

LAYOUT: tuple[int, int, int, int, int]

class Ring:
    def __init__(
        self,
        keep: object,
        address: int,
        capacity: int,
        maxsize: int,
        max_item: int,
        lock_spins: int,
        spins: int,
    ) -> None: ...
    def put(self, payload: bytes, /) -> bool: ...
    def get(self, spin: bool, /) -> bytes | None: ...
