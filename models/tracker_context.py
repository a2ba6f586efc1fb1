"""The `context` a web or app tracker sends with each event, for generated users: a device with
its user agent, an IP address, a locale and country per user; a channel, campaign and referrer
per session. Some users' trackers send none, and some fields are missing, as in real logs.
Drawn from an RNG of its own, so every other draw of a seed is the same with or without it.
The full IP addresses and user agents are what the engine must never keep (docs/privacy.md)."""

from __future__ import annotations

import random

USER_AGENTS = {
    "mobile": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
        " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/123.0.0.0 Mobile Safari/537.36",
    ),
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
        " Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ),
    "tablet": (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
        " Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0.0.0 Safari/537.36",
    ),
}
DEVICE_SHARES = (("mobile", 0.55), ("desktop", 0.35), ("tablet", 0.10))
LOCALES = (
    ("de-DE", "DE", "BE"),
    ("en-GB", "GB", "ENG"),
    ("fr-FR", "FR", "IDF"),
    ("en-US", "US", "CA"),
)
CHANNELS = ("organic", "paid_search", "email", "social", "direct")
APP_SHARE = 0.3  # of mobile users: the shop's app instead of the browser
IPV6_SHARE = 0.2


class TrackerContexts:
    def __init__(self, seed: int, rate: float):
        """`rate`: the share of users whose tracker sends a context."""
        self.rng, self.rate = random.Random(f"{seed}-context"), rate

    def for_user(self, user_id: str) -> dict | None:
        rng = self.rng
        if rng.random() >= self.rate:
            return None
        device = rng.choices([d for d, _ in DEVICE_SHARES], [w for _, w in DEVICE_SHARES])[0]
        locale, country, region = rng.choice(LOCALES)
        app = device == "mobile" and rng.random() < APP_SHARE
        context = {
            "user_agent": rng.choice(USER_AGENTS[device]),
            "ip": self.ip(),
            "locale": locale,
            "geo": {"country": country, "region": region, "city": "somewhere", "lat": 52.1},
            "platform": rng.choice(("ios", "android")) if app else "web",
        }
        if app:
            context["app_version"] = f"4.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
            context["device_type"] = "mobile"
        if rng.random() < 0.1:  # trackers differ in what they send
            del context["user_agent"]
        return context

    def for_session(self, user_context: dict | None, user_id: str) -> dict | None:
        if user_context is None:
            return None
        rng = self.rng
        channel = rng.choice(CHANNELS)
        session = {**user_context, "channel": channel}
        if channel in ("paid_search", "email", "social"):
            session["campaign"] = f"{channel}-{rng.randint(1, 12):02d}"
        if channel == "email":
            # Mail clients put the recipient in the link: what a referrer must not keep.
            session["referrer"] = f"https://mail.example.com/open?to={user_id}%40example.com"
        elif channel in ("paid_search", "organic"):
            session["referrer"] = "https://www.search.example/results?q=shoes"
        return session

    def ip(self) -> str:
        rng = self.rng
        if rng.random() < IPV6_SHARE:
            groups = [f"{rng.randint(0x2001, 0x2A0F):x}"] + [
                f"{rng.randint(0, 0xFFFF):x}" for _ in range(7)
            ]
            return ":".join(groups)
        return ".".join(str(n) for n in (rng.randint(11, 223), *rng.sample(range(1, 255), 3)))
