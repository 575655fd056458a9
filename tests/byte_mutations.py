"""Byte-level mutations of a valid request body, for the fuzz tests: each takes the body and where
(an index taken modulo its length, so any integer hypothesis draws is a place in it)."""


def truncate(body: bytes, at: int) -> bytes:
    return body[: at % (len(body) + 1)]


def flip(body: bytes, at: int, bit: int) -> bytes:
    if not body:        # truncated to nothing by an earlier mutation
        return body
    at %= len(body)
    return body[:at] + bytes([body[at] ^ (1 << bit)]) + body[at + 1:]


def insert(body: bytes, at: int, junk: bytes) -> bytes:
    at %= len(body) + 1
    return body[:at] + junk + body[at:]
