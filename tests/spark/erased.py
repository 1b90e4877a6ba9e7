"""Looks for an erased customer in lake tables with Spark, as an independent reader would.

python3 tests/spark/erased.py CUSTOMER_ID TEXT TABLE_URL...

For each Delta table: the rows of CUSTOMER_ID at the current version (Delta reader), and
the rows in *any* Parquet file still under the table's directory, referenced or not
(what a vacuum leaves behind), that carry CUSTOMER_ID in customer_id or TEXT (an address,
a cadastral number) anywhere in the row. Prints one JSON object: table -> counts.
"""
import json
import sys

from session import delta_session
from pyspark.sql import functions as F

spark = delta_session("hoffrec-erasure-check")
customer, text, tables = sys.argv[1], sys.argv[2], sys.argv[3:]


def matches(df):
    whole_row = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))
    hit = whole_row.contains(text)
    if "customer_id" in df.columns:
        hit = hit | (F.col("customer_id") == customer)
    return df.filter(hit).count()


out = {}
for url in tables:
    current = spark.read.format("delta").load(url)
    files = (
        spark.read.option("recursiveFileLookup", "true")
        # Data files only: the log's checkpoints are Parquet too, with another schema.
        .option("pathGlobFilter", "part-*.parquet")
        .parquet(url)
    )
    out[url] = {
        "rows": current.count(),
        "current": matches(current),
        "any_file": matches(files),
    }
print(json.dumps(out))
spark.stop()
