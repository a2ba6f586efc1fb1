"""Keyed pseudonyms of user ids for the analytical outputs (docs/privacy.md).

A pseudonym is `p-` and the first 32 hex digits (128 bits) of HMAC-SHA256(key, user id): the
same user always gets the same one under the same key, so analysts can count, join and follow
users over time, but without the key nobody can tell whose it is or compute it from an id.
The key comes from BEHAVIOR_PSEUDONYM_KEY, or locally from a key file made on first use
(`privacy.pseudonym_key_file`): conf.settings.pseudonym_key."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
from functools import lru_cache

from conf.settings import ConfigError, Privacy, load_or_exit, pseudonym_key

PREFIX = "p-"
DIGITS = 32  # hex digits kept: 128 bits, no collision among any realistic number of users
MIN_KEY_BYTES = 32


class Pseudonyms:
    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        # A user's outputs come in bursts; the HMAC is computed once per burst.
        self.of = lru_cache(maxsize=65536)(self._pseudonym)

    def _pseudonym(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:DIGITS]

    def __reduce__(self):
        # Pickled into Flink's Python workers without the cache.
        return Pseudonyms, (self._key,)

    def __repr__(self) -> str:
        return "Pseudonyms(<key>)"  # never the key


def identity(user_id: str) -> str:
    """The subject of outputs when pseudonymization is off: the id itself."""
    return user_id


def subject_of(pseudonyms: Pseudonyms | None):
    """The function that names a user in analytical outputs."""
    return identity if pseudonyms is None else pseudonyms.of


def configured(privacy: Privacy) -> Pseudonyms | None:
    """The pseudonyms `privacy` asks for (None: off), with the key it names."""
    key = pseudonym_key(privacy)
    return None if key is None else Pseudonyms(key)


def configured_subject(privacy: Privacy):
    """The function that names a user in analytical outputs, as `privacy` configures it."""
    return subject_of(configured(privacy))


def main(argv: list[str] | None = None) -> int:
    """`make pseudonym ID=<user id>`: the pseudonym the analytical outputs give a user (for support
    staff answering a user's request, or an analyst told whose data to look at)."""
    parser = argparse.ArgumentParser(prog="python -m udfs.pseudonyms", description=main.__doc__)
    parser.add_argument("user_ids", nargs="+", metavar="USER_ID")
    args = parser.parse_args(argv)
    config = load_or_exit()
    try:
        subject = configured_subject(config.privacy)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    for user_id in args.user_ids:
        print(f"{user_id}\t{subject(user_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
