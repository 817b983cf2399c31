"""Message ids: ULIDs, as ucgwd makes them (common/util.c: id_new).

26 characters of Crockford base32: 48 bits of milliseconds since the epoch,
then 80 random bits. The client makes the id before it sends, so a send it
repeats after a lost connection carries the same id and ucgwd answers it with
the first one's state instead of taking a second message."""
import os
import time

__all__ = ["new_id", "is_id", "ID_LEN"]

ID_LEN = 26
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALID = frozenset(_B32)


# Two digits per 10 bits: 13 look-ups make the 26 digits.
_PAIRS = [a + b for a in _B32 for b in _B32]
_SHIFTS = tuple(range(120, -1, -10))


def new_id() -> str:
    """A fresh ULID (sorts by creation time, like ucgwd's own ids)."""
    value = (int(time.time() * 1000) & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(value >> s) & 1023] for s in _SHIFTS])


def is_id(text: str) -> bool:
    """26 characters of Crockford base32 (upper case), the first at most '7'."""
    return len(text) == ID_LEN and text[0] <= "7" and all(c in _VALID for c in text)
