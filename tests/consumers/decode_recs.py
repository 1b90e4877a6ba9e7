"""Decode one recs.customer record value with fastavro.

The value is Avro single-object encoding: 0xC3 0x01, the writer schema's 64-bit
fingerprint (CRC-64-AVRO of its Parsing Canonical Form, little-endian), then the Avro
binary body. Index every schema version you ship (avro/recommendation.avsc and
avro/history/recommendation.v*.avsc) by fingerprint, and read with the newest.

    python3 decode_recs.py AVRO_DIR < value.bin
"""
import glob
import io
import json
import os
import sys

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form


def writer_schemas(avro_dir):
    """Every recommendation schema version hoffrec may have written, by fingerprint."""
    found = {}
    paths = [os.path.join(avro_dir, "recommendation.avsc")]
    paths += glob.glob(os.path.join(avro_dir, "history", "recommendation.v*.avsc"))
    for path in paths:
        with open(path) as f:
            schema = fastavro.parse_schema(json.load(f))
        found[bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))] = schema
    return found


def decode(value, writers, reader):
    if value[:2] != b"\xc3\x01":
        raise ValueError("not Avro single-object encoding")
    writer = writers.get(value[2:10])
    if writer is None:
        raise ValueError(f"unknown schema fingerprint {value[2:10].hex()}: ship the newer schema")
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, reader)


if __name__ == "__main__":
    avro_dir = sys.argv[1]
    writers = writer_schemas(avro_dir)
    with open(os.path.join(avro_dir, "recommendation.avsc")) as f:
        reader = fastavro.parse_schema(json.load(f))
    rec = decode(sys.stdin.buffer.read(), writers, reader)
    print(json.dumps({
        "customer_id": rec["customer_id"],
        "list_id": rec["list_id"],
        "model_version": rec["model_version"],
        "items": [{"product_id": i["product_id"], "score": i["score"], "reasons": i["reasons"]}
                  for i in rec["items"]],
    }))
