"""Reads a Delta table with Spark (pyspark + delta-spark) and prints what it sees as JSON.

Used by the integration tests to prove the lake is readable by the engines analysts use:
python3 tests/spark/read_delta.py hdfs://127.0.0.1:9000/path/raw/<topic>
"""
import json
import sys

from session import delta_session

spark = delta_session("hoffrec-delta-check")
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
