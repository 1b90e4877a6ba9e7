"""The Spark session every check script here uses: local, on 127.0.0.1, with Delta.

The Delta jars come through Maven (tests/services/spark/pom.xml, resolved by up.sh), like
every other jar the tests use, rather than through Spark's own Ivy download.
"""
import os

from pyspark.sql import SparkSession


def delta_session(app, **extra):
    state = os.environ.get("HOFFREC_SERVICES_DIR", os.path.expanduser("~/.cache/hoffrec/services"))
    with open(os.path.join(state, "spark.classpath")) as f:
        jars = ",".join(p for p in f.read().strip().split(":") if p)
    builder = (
        SparkSession.builder.master("local[1]")
        .config("spark.jars", jars)
        .appName(app)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in extra.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
