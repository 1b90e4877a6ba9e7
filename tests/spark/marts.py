"""Runs the mart SQL in mart_sql/ with Spark SQL (pyspark + delta-spark) over the raw
tables of a lake, as one full fold, and compares every mart with the table hoffrec wrote.

python3 tests/spark/marts.py LAKE_URL MART_SQL_DIR raw_name=table_url ... \
    [--consents=raw_name] [--purpose=raw_name:purpose ...]
Prints one JSON line: {mart: {"spark": rows, "hoffrec": rows, "only_spark": n,
"only_hoffrec": n, "examples": [...]}}.

The file format is the one src/mart/files.rs reads: `-- view: name` files hold one
SELECT; `-- mart: name` files hold the changed-keys SELECT and the rows SELECT, or, with
`-- combine:` lines, only the rows SELECT. On a full fold `new_raw.<t>` is all of
`raw.<t>`, so `changed` is every key, a combining mart's rows are the whole mart (there is
nothing stored to combine with), and `prev_mart.<m>` (the mart as last seen) is empty.

A raw table a consent purpose governs (`--purpose`) is read as hoffrec's marts read it
(src/mart/consent.rs): only the rows of customers whose newest consent event for the
purpose in the `--consents` table is `given`, collected since the first `given` after
their newest withdrawal.
"""
import glob
import json
import os
import sys
import tempfile

from session import delta_session
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType, DoubleType, FloatType

lake, sql_dir = sys.argv[1], sys.argv[2]
tables = [a for a in sys.argv[3:] if not a.startswith("--")]
options = [a[2:].split("=", 1) for a in sys.argv[3:] if a.startswith("--")]
consents = next((v for k, v in options if k == "consents"), None)
purposes = dict(v.split(":", 1) for k, v in options if k == "purpose")
warehouse = tempfile.mkdtemp(prefix="hoffrec-spark-")
spark = delta_session(
    "hoffrec-mart-parity",
    **{
        "spark.sql.warehouse.dir": warehouse,
        "spark.sql.shuffle.partitions": "1",
        "spark.databricks.delta.snapshotPartitions": "1",
        "spark.ui.showConsoleProgress": "false",
    },
)
for db in ("raw", "new_raw", "mart", "prev_mart"):
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
urls = dict(pair.split("=", 1) for pair in tables)
for name, url in urls.items():
    if name in purposes:
        spark.sql(
            f"""CREATE VIEW raw.{name} AS SELECT r.* FROM delta.`{url}` r LEFT SEMI JOIN (
                SELECT customer_id, min(event_time) AS since FROM (
                    SELECT customer_id, action, event_time,
                           sum(CASE WHEN action = 'withdrawn' THEN 1 ELSE 0 END) OVER (
                               PARTITION BY customer_id ORDER BY event_time, event_id) AS so_far,
                           sum(CASE WHEN action = 'withdrawn' THEN 1 ELSE 0 END) OVER (
                               PARTITION BY customer_id) AS in_all
                    FROM delta.`{urls[consents]}` WHERE purpose = '{purposes[name]}') k
                WHERE action = 'given' AND so_far = in_all
                GROUP BY customer_id) g
            ON g.customer_id = r.customer_id AND r.event_time >= g.since"""
        )
    else:
        spark.sql(f"CREATE TABLE raw.{name} USING delta LOCATION '{url}'")
    spark.sql(f"CREATE VIEW new_raw.{name} AS SELECT * FROM raw.{name}")


def header(text, key):
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("--") and line[2:].strip().startswith(key + ":"):
            return line[2:].strip()[len(key) + 1 :].strip()
    return None


def statements(text):
    out, current = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        code = line.rstrip()
        if code.endswith(";"):
            current.append(code[:-1])
            out.append("\n".join(current).strip())
            current = []
        else:
            current.append(code)
    rest = "\n".join(current).strip()
    if rest:
        out.append(rest)
    return [s for s in out if s]


def comparable(df):
    # Fractions compare to 9 decimal places; everything else exactly, as text. Spark reads
    # a literal like 1.0 as DECIMAL where DataFusion reads DOUBLE, so a column may be
    # decimal on one side and double on the other with the same values.
    cols = []
    for field in df.schema.fields:
        c = F.col(field.name)
        if isinstance(field.dataType, (DoubleType, FloatType, DecimalType)):
            c = F.format_number(c.cast("double"), 9)
        cols.append(c.cast("string").alias(field.name))
    return df.select(*cols)


report = {}
views = []
for path in sorted(glob.glob(os.path.join(sql_dir, "*.sql"))):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stmts = statements(text)
    view, mart = header(text, "view"), header(text, "mart")
    if view:
        views.append((view, stmts[0]))
        continue
    # As hoffrec does: views are (re)defined before each mart, so a view over an earlier
    # mart sees it; one over a mart that does not exist yet waits until it does.
    for name, query in views:
        try:
            spark.sql(query).createOrReplaceTempView(name)
        except Exception:
            pass
    if len(stmts) == 2:
        spark.sql(stmts[0]).distinct().createOrReplaceTempView("changed")
    ours = spark.sql(stmts[-1])
    ours.write.format("delta").mode("overwrite").saveAsTable(f"mart.{mart}")
    ours = spark.table(f"mart.{mart}")
    spark.sql(f"CREATE OR REPLACE VIEW prev_mart.{mart} AS SELECT * FROM mart.{mart} WHERE false")
    theirs = spark.read.format("delta").load(f"{lake.rstrip('/')}/mart/{mart}").select(*ours.columns)
    a, b = comparable(ours), comparable(theirs)
    only_spark, only_hoffrec = a.exceptAll(b), b.exceptAll(a)
    report[mart] = {
        "spark": ours.count(),
        "hoffrec": theirs.count(),
        "only_spark": only_spark.count(),
        "only_hoffrec": only_hoffrec.count(),
        "examples": [r.asDict() for r in only_spark.limit(2).collect()]
        + [r.asDict() for r in only_hoffrec.limit(2).collect()],
    }
print(json.dumps(report, ensure_ascii=False, default=str))
spark.stop()
