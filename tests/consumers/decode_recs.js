// Decode one recs.customer record value with avsc (npm install avsc@5.7.9).
//
// The value is Avro single-object encoding: 0xC3 0x01, the writer schema's 64-bit
// fingerprint (CRC-64-AVRO of its Parsing Canonical Form, little-endian), then the Avro
// binary body. avsc has no single-object reader, so index every schema version you ship
// (avro/recommendation.avsc and avro/history/recommendation.v*.avsc) by that fingerprint,
// and read the body with the writer's type resolved to the newest.
//
//     node decode_recs.js AVRO_DIR < value.bin
'use strict';
const fs = require('fs');
const path = require('path');
const avro = require('avsc');

// CRC-64-AVRO (Rabin), as the Avro specification defines it.
const EMPTY = 0xc15d213aa4d7a795n;
const TABLE = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
  return fp;
});

function fingerprint(type) {
  // avsc's `schema()` is the Parsing Canonical Form (logical types and docs dropped).
  let fp = EMPTY;
  for (const b of Buffer.from(JSON.stringify(type.schema()), 'utf8')) {
    fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(b)) & 0xffn)];
  }
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(fp);
  return out.toString('hex');
}

function writerTypes(avroDir) {
  const files = [path.join(avroDir, 'recommendation.avsc')];
  const history = path.join(avroDir, 'history');
  if (fs.existsSync(history)) {
    for (const f of fs.readdirSync(history)) {
      if (/^recommendation\.v\d+\.avsc$/.test(f)) files.push(path.join(history, f));
    }
  }
  const found = new Map();
  for (const f of files) {
    const type = avro.Type.forSchema(JSON.parse(fs.readFileSync(f, 'utf8')));
    found.set(fingerprint(type), type);
  }
  return found;
}

function decode(value, writers, reader) {
  if (value[0] !== 0xc3 || value[1] !== 0x01) throw new Error('not Avro single-object encoding');
  const key = value.subarray(2, 10).toString('hex');
  const writer = writers.get(key);
  if (!writer) throw new Error(`unknown schema fingerprint ${key}: ship the newer schema`);
  return reader.fromBuffer(value.subarray(10), reader.createResolver(writer));
}

const avroDir = process.argv[2];
const reader = avro.Type.forSchema(JSON.parse(fs.readFileSync(path.join(avroDir, 'recommendation.avsc'), 'utf8')));
const rec = decode(fs.readFileSync(0), writerTypes(avroDir), reader);
console.log(JSON.stringify({
  customer_id: rec.customer_id,
  list_id: rec.list_id,
  model_version: rec.model_version,
  items: rec.items.map((i) => ({ product_id: i.product_id, score: i.score, reasons: i.reasons })),
}));
