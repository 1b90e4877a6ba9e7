"""Reads a Delta table with Spark (pyspark + delta-spark) and prints what it sees as JSON.

Used by the integration tests to prove the lake is readable by the engines analysts use:
python3 tests/spark/read_delta.py hdfs://127.0.0.1:9000/path/raw/<topic>
"""
import json
import os
import sys

from pyspark.sql import SparkSession

# The Delta jars come through Maven (tests/services/spark/pom.xml, resolved by up.sh),
# like every other jar the tests use, rather than through Spark's own Ivy download.
state = os.environ.get("HOFFREC_SERVICES_DIR", os.path.expanduser("~/.cache/hoffrec/services"))
with open(os.path.join(state, "spark.classpath")) as f:
    jars = ",".join(p for p in f.read().strip().split(":") if p)

spark = (
    SparkSession.builder.master("local[1]")
    .config("spark.jars", jars)
    .appName("hoffrec-delta-check")
    .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
    .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.format("delta").load(sys.argv[1])
print(
    json.dumps(
        {
            "rows": df.count(),
            "distinct_event_ids": df.select("event_id").distinct().count(),
            "columns": df.columns,
        }
    )
)
spark.stop()
