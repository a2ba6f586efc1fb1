"""Data minimization: what of an event's personal fields the engine keeps, decided once, where
the event is parsed, before anything reaches state, a table or a topic (docs/privacy.md).

- An IP address keeps its network part only: IPv4 /24, IPv6 /48 (the host bits are zeroed, so
  the result is still an address and minimizing it again changes nothing).
- A user agent is reduced to a device class (desktop, mobile, tablet, tv, bot, other) by the
  uap-core rules (`ua-parser`), then dropped.
- A referrer keeps its scheme and host: paths and query strings can carry emails and tokens.
- Geography keeps country and region; anything finer the tracker sends is dropped, as is any
  context field the contract does not name.
- A search query keeps normalized terms only: lower case, at most MAX_QUERY_TERMS, without
  tokens that look like an email address, a phone, card or order number.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from ua_parser import parse as parse_user_agent

IPV4_PREFIX, IPV6_PREFIX = 24, 48
DEVICE_CLASSES = ("desktop", "mobile", "tablet", "tv", "console", "wearable", "bot", "other")
MAX_QUERY_TERMS = 10
MAX_TERM_LENGTH = 32
# A token with this many digits is more likely a phone, card, order or account number than a
# word a shopper searched for.
MAX_DIGITS_IN_TERM = 3
REDUCED_CACHE = 4096  # distinct user agents and addresses kept reduced (per process)


@dataclass(frozen=True, slots=True)
class Context:
    """Where and how an event happened, minimized. Its JSON form is itself a valid contract
    `context`, so archived and replayed events parse again to the same value."""

    device_type: str | None = None
    platform: str | None = None
    app_version: str | None = None
    channel: str | None = None
    campaign: str | None = None
    referrer: str | None = None  # scheme://host
    locale: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    region: str | None = None
    ip: str | None = None  # the network part, host bits zeroed

    def to_json(self) -> dict[str, Any]:
        doc = {
            name: value
            for name in self.__slots__
            if name not in ("country", "region") and (value := getattr(self, name)) is not None
        }
        geo = {"country": self.country, "region": self.region}
        geo = {k: v for k, v in geo.items() if v is not None}
        if geo:
            doc["geo"] = geo
        return doc


def minimize_context(doc: dict) -> Context | None:
    """The minimized context of a contract-valid `context` object (None when nothing is left)."""
    device = doc.get("device_type")
    if device is None and doc.get("user_agent"):
        device = device_class(doc["user_agent"])
    geo = doc.get("geo") or {}
    context = Context(
        device_type=device,
        platform=doc.get("platform"),
        app_version=doc.get("app_version"),
        channel=doc.get("channel"),
        campaign=doc.get("campaign"),
        referrer=origin(doc["referrer"]) if doc.get("referrer") else None,
        locale=doc.get("locale"),
        country=geo.get("country"),
        region=geo.get("region"),
        ip=truncate_ip(doc["ip"]) if doc.get("ip") else None,
    )
    return None if context == Context() else context


# The network part of an address, as a mask over its bits.
_NETWORK_MASK = {
    4: ((1 << IPV4_PREFIX) - 1) << (32 - IPV4_PREFIX),
    6: ((1 << IPV6_PREFIX) - 1) << (128 - IPV6_PREFIX),
}


@lru_cache(maxsize=REDUCED_CACHE)
def truncate_ip(text: str) -> str:
    """The address with its host bits zeroed (IPv4 /24, IPv6 /48). Raises ValueError for text
    that is not an IP address."""
    address = ipaddress.ip_address(text.strip())
    return str(type(address)(int(address) & _NETWORK_MASK[address.version]))


def origin(url: str) -> str | None:
    """scheme://host of a URL (no user info, port, path or query); None when it has no host."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if not host:
        return None
    return f"{parts.scheme or 'https'}://{host}"


@lru_cache(maxsize=REDUCED_CACHE)
def device_class(user_agent: str) -> str:
    """One of DEVICE_CLASSES, from uap-core's device, OS and browser families."""
    parsed = parse_user_agent(user_agent)
    device = parsed.device.family if parsed.device else ""
    brand = (parsed.device.brand or "") if parsed.device else ""
    os_family = parsed.os.family if parsed.os else ""
    text = user_agent.lower()
    if device == "Spider":
        return "bot"
    if "tv" in device.lower().split() or "smart-tv" in device.lower() or "tv" in os_family.lower():
        return "tv"
    if any(name in device for name in ("PlayStation", "Xbox", "Nintendo")):
        return "console"
    if "watch" in device.lower() or os_family in ("watchOS", "Wear OS"):
        return "wearable"
    if device.startswith("iPad") or "Tablet" in brand or "tablet" in text or "Kindle" in device:
        return "tablet"
    if os_family == "Android" and "mobile" not in text:
        return "tablet"  # Android browsers mark phones "Mobile"; without it, a tablet
    if os_family in ("iOS", "Android", "Windows Phone", "BlackBerry OS") or "mobile" in text:
        return "mobile"
    if os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD"):
        return "desktop"
    return "other"


_TOKEN = re.compile(r"[^\W_]+(?:['.@+-][^\W_]+)*", re.UNICODE)


def normalize_query(query: str) -> str:
    """The query's terms: NFKC, lower case, in their order, each once, at most MAX_QUERY_TERMS,
    leaving out tokens that look like an email address or a number someone could be found by."""
    terms: list[str] = []
    for token in _TOKEN.findall(unicodedata.normalize("NFKC", query).lower()):
        if "@" in token or len(token) > MAX_TERM_LENGTH:
            continue
        if sum(ch.isdigit() for ch in token) >= MAX_DIGITS_IN_TERM:
            continue
        if token not in terms:
            terms.append(token)
        if len(terms) == MAX_QUERY_TERMS:
            break
    return " ".join(terms)


# ------------------------------------------------------------------ refused records

_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])")
_USER_AGENT = re.compile(rb'"user_agent"\s*:\s*"(?:[^"\\]|\\.)*"')


def kept_of_refused(raw: bytes) -> bytes:
    """What a dead letter keeps of a refused record: its bytes, scrubbed when they may hold a
    context."""
    return scrubbed(raw) if b'"context"' in raw else raw


def scrubbed(raw: bytes) -> bytes:
    """A refused record's bytes as a dead letter keeps them: when they hold a JSON object with
    a `context`, that context minimized field by field (what fails validation dropped);
    otherwise, every IP address masked and every `user_agent` value removed from the text."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested too deep for the parser
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("context"), dict):
        doc["context"] = _minimized_leniently(doc["context"])
        # ASCII escapes: a lone surrogate the record holds stays as it came, an escape.
        return json.dumps(doc, separators=(",", ":")).encode()
    text = _USER_AGENT.sub(b'"user_agent":"(removed)"', raw).decode("utf-8", "replace")
    text = _IPV4.sub(lambda m: _masked(m.group()), text)
    text = _IPV6.sub(lambda m: _masked(m.group()), text)
    return text.encode()


def _masked(candidate: str) -> str:
    try:
        return truncate_ip(candidate)
    except ValueError:
        return candidate


def _minimized_leniently(context: dict) -> dict:
    out = {k: v for k, v in context.items() if k not in ("ip", "user_agent", "referrer", "geo")}
    for key, reduce in (("ip", truncate_ip), ("user_agent", device_class), ("referrer", origin)):
        value = context.get(key)
        try:
            reduced = reduce(value) if isinstance(value, str) else None
        except ValueError:
            reduced = None
        if reduced is not None:
            out["device_type" if key == "user_agent" else key] = reduced
    geo = context.get("geo")
    if isinstance(geo, dict):
        out["geo"] = {k: v for k, v in geo.items() if k in ("country", "region")}
    return out
