"""Writes `returning_customers.csv.gz`: a shop's clickstream as a third-party tracker exports it
(RetailRocket-style columns, read with conf/mappings/retail_clickstream.yaml), shaped like real
traffic rather than like the generator:

- returning customers who buy every 2 to 6 months, silent in between (longer than the
  profile's short-term retention), each visit a few views, a cart add and usually a purchase;
- regulars who come every few days, browse, and sometimes buy or abandon a cart;
- many visitors with one or two views and nothing else;
- rows a tracker really produces: views without a price (missing field), and event names the
  mapping does not know (`wishlist`).

    python -m tests.data.shop_log     # rewrites the file (deterministic)
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from pathlib import Path

from udfs.timeunits import DAY_MS, MINUTE_MS

PATH = Path(__file__).with_name("returning_customers.csv.gz")
COLUMNS = ("timestamp", "visitorid", "event", "itemid", "categoryid", "price", "transactionid")
START_MS = 1_736_121_600_000  # 2025-01-06T00:00:00Z
END_MS = 1_793_404_800_000  # 2026-10-31T00:00:00Z
CATEGORIES = {"1173": 25.0, "491": 60.0, "1051": 180.0, "683": 12.0}


class Shop:
    def __init__(self, seed: int):
        self.random = random.Random(seed)
        self.rows: list[tuple] = []
        self.orders = 0

    def item(self) -> tuple[str, str, float]:
        category = self.random.choice(list(CATEGORIES))
        price = round(CATEGORIES[category] * self.random.uniform(0.5, 2.0), 2)
        return str(self.random.randrange(100_000, 999_999)), category, price

    def visit(self, visitor: str, ts: int, views: int, cart: bool, buy: bool) -> int:
        """One session; returns its end."""
        r = self.random
        item = self.item()
        for _ in range(views):
            item = self.item()
            price = "" if r.random() < 0.04 else f"{item[2]:.2f}"  # the tracker lost it
            self.rows.append((ts, visitor, "view", item[0], item[1], price, ""))
            ts += r.randrange(20_000, 4 * MINUTE_MS)
            if r.random() < 0.03:
                self.rows.append((ts, visitor, "wishlist", item[0], item[1], "", ""))
        if cart:
            self.rows.append((ts, visitor, "addtocart", item[0], item[1], f"{item[2]:.2f}", ""))
            ts += r.randrange(30_000, 5 * MINUTE_MS)
            if buy:
                self.orders += 1
                order = f"T{self.orders:05d}"
                self.rows.append(
                    (ts, visitor, "transaction", item[0], item[1], f"{item[2]:.2f}", order)
                )
        return ts

    def returning_customer(self, visitor: str) -> None:
        r = self.random
        ts = START_MS + r.randrange(0, 60 * DAY_MS)
        while ts < END_MS:
            self.visit(visitor, ts, r.randint(2, 6), cart=True, buy=r.random() < 0.85)
            ts += r.randrange(60 * DAY_MS, 180 * DAY_MS)  # two to six months of silence

    def regular(self, visitor: str) -> None:
        r = self.random
        ts = START_MS + r.randrange(0, 400 * DAY_MS)
        until = ts + r.randrange(30 * DAY_MS, 200 * DAY_MS)
        while ts < min(until, END_MS):
            cart = r.random() < 0.45
            self.visit(visitor, ts, r.randint(1, 9), cart=cart, buy=cart and r.random() < 0.45)
            ts += r.randrange(DAY_MS // 2, 9 * DAY_MS)

    def passer_by(self, visitor: str) -> None:
        ts = START_MS + self.random.randrange(0, END_MS - START_MS - DAY_MS)
        self.visit(visitor, ts, self.random.randint(1, 2), cart=False, buy=False)


def write(path: Path = PATH, seed: int = 2025) -> Path:
    shop = Shop(seed)
    for i in range(70):
        shop.returning_customer(f"{100_000 + i}")
    for i in range(90):
        shop.regular(f"{200_000 + i}")
    for i in range(400):
        shop.passer_by(f"{300_000 + i}")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    # A tracker's export: in time order, with a visitor's rows interleaved with everyone's.
    writer.writerows(sorted(shop.rows, key=lambda row: (row[0], row[1])))
    # No name and mtime=0 in the header: the same bytes on every run, so the committed file
    # can be checked.
    with path.open("wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as handle:
        handle.write(text.getvalue().encode())
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
