// gen.js — encode the Sparkplug B fixtures of package sparkplug with Eclipse
// Tahu's own encoder (npm sparkplug-payload), write them to fixtures/*.bin,
// and write expected.json: what the Go decoder must make of each message,
// stated here from the inputs, not from any decoding.
//
// Also decodes rebirth.bin (our RebirthRequest, written by the Go test
// TestRebirthRequestFixture) with Tahu's decoder and checks it.
//
// Run by scripts/sparkplug-fixtures.sh; node gen.js from this folder.
"use strict";
const fs = require("fs");
const path = require("path");
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

const here = __dirname;
const outDir = path.join(here, "fixtures");
fs.rmSync(outDir, { recursive: true, force: true });
fs.mkdirSync(outDir);

const T0 = 1700000000000; // payload timestamps count from here (ms)
const G = "plant1";

// num gives the expected decimal (or NaN/Infinity) text of a numeric value.
function num(v) {
  if (Long.isLong(v)) return v.toString();
  if (typeof v === "boolean") return v ? "1" : "0";
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "Infinity";
  if (v === -Infinity) return "-Infinity";
  return String(v);
}

const numeric = new Set(["Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
  "Float", "Double", "Boolean", "DateTime"]);
const typeNumber = { Int8: 1, Int16: 2, Int32: 3, Int64: 4, UInt8: 5, UInt16: 6, UInt32: 7, UInt64: 8,
  Float: 9, Double: 10, Boolean: 11, String: 12, DateTime: 13, Text: 14, UUID: 15, Bytes: 17 };

// m describes one metric: what the encoder gets and what the decoder must
// give. opts: alias, timestamp (ms), inexact, aliasOnly (DATA: no name).
function m(name, type, value, opts = {}) {
  const enc = { type, value };
  if (!opts.aliasOnly) enc.name = name;
  if (opts.alias !== undefined) enc.alias = opts.alias;
  if (opts.timestamp !== undefined) enc.timestamp = opts.timestamp;
  const want = { name, datatype: typeNumber[type], null: value === null };
  if (opts.alias !== undefined) want.alias = opts.alias;
  if (opts.timestamp !== undefined) want.timestamp = opts.timestamp;
  if (value !== null) {
    if (numeric.has(type)) {
      want.number = num(type === "Float" ? Math.fround(value) : value);
      want.inexact = !!opts.inexact;
    } else if (type === "Bytes") {
      want.other = Buffer.from(value).toString("base64");
    } else {
      want.other = value;
    }
  }
  return { enc, want, invalid: !!opts.invalid };
}

const scenarios = [];
let scenario;
function begin(name, what) {
  scenario = { name, what, steps: [] };
  scenarios.push(scenario);
}

// step encodes one message. device: "" for node messages. expect: rebirth
// ("not born", "unknown alias", "seq gap"), stale, landed (false: the
// metrics give no values, as for a DATA before its BIRTH or any DEATH).
function step(type, edge, device, seq, metrics, expect = {}) {
  const n = scenario.steps.length;
  const topic = ["spBv1.0", G, type, edge].concat(device ? [device] : []).join("/");
  const ts = T0 + 1000 * n;
  const payload = { timestamp: ts, metrics: metrics.map((x) => x.enc) };
  if (seq !== null) payload.seq = seq;
  const file = `${scenario.name}-${String(n).padStart(2, "0")}-${type}.bin`;
  fs.writeFileSync(path.join(outDir, file), Buffer.from(sparkplug.encodePayload(payload)));
  const landed = expect.landed !== false && !type.endsWith("DEATH");
  const dev = [G, edge].concat(device ? [device] : []).join("/");
  const values = !landed ? [] : metrics.filter((x) => !x.invalid && !(expect.unknown || []).includes(x.enc.alias))
    .map((x) => Object.assign({ device: dev }, x.want, { timestamp: x.want.timestamp ?? ts }));
  scenario.steps.push({
    topic, file, values,
    invalid: landed ? metrics.filter((x) => x.invalid).length : 0,
    rebirth: expect.rebirth || "",
    unknown_aliases: expect.unknown || [],
    seq_want: expect.seqWant ?? null,
    stale: !!expect.stale,
  });
}

const bd = (v) => m("bdSeq", "UInt64", v);

// Every numeric datatype at its edges, then the same metrics by alias only.
begin("datatypes", "every datatype's edge values in an NBIRTH, then alias-only NDATA");
const edges = [
  ["Int8/min", "Int8", -128], ["Int8/max", "Int8", 127], ["Int8/neg1", "Int8", -1],
  ["Int16/min", "Int16", -32768], ["Int16/max", "Int16", 32767],
  ["Int32/min", "Int32", -2147483648], ["Int32/max", "Int32", 2147483647],
  ["Int64/min", "Int64", Long.MIN_VALUE, { inexact: true }], ["Int64/max", "Int64", Long.MAX_VALUE, { inexact: true }],
  ["Int64/neg1", "Int64", Long.NEG_ONE], ["Int64/2^53", "Int64", Long.fromString("9007199254740992")],
  ["UInt8/max", "UInt8", 255], ["UInt16/max", "UInt16", 65535], ["UInt32/max", "UInt32", 4294967295],
  ["UInt64/zero", "UInt64", Long.UZERO],
  ["UInt64/2^53+1", "UInt64", Long.fromString("9007199254740993", true), { inexact: true }],
  ["UInt64/max", "UInt64", Long.MAX_UNSIGNED_VALUE, { inexact: true }],
  ["Float/nan", "Float", NaN], ["Float/inf", "Float", Infinity], ["Float/-inf", "Float", -Infinity],
  ["Float/max", "Float", 3.4028234663852886e38], ["Float/denormal", "Float", 1.401298464324817e-45],
  ["Float/third", "Float", 1 / 3],
  ["Double/nan", "Double", NaN], ["Double/inf", "Double", Infinity], ["Double/-inf", "Double", -Infinity],
  ["Double/max", "Double", Number.MAX_VALUE], ["Double/min", "Double", Number.MIN_VALUE], ["Double/neg", "Double", -0.1],
  ["Boolean/true", "Boolean", true], ["Boolean/false", "Boolean", false],
  ["DateTime/now", "DateTime", Long.fromNumber(1700000000123, true)],
  ["String/hello", "String", "héllo, wörld"], ["Text/empty", "Text", ""],
  ["UUID/id", "UUID", "123e4567-e89b-12d3-a456-426614174000"], ["Bytes/raw", "Bytes", Buffer.from([0, 1, 254, 255])],
  ["Double/null", "Double", null],
];
step("NBIRTH", "edge1", "", 0, [bd(0), m("Node Control/Rebirth", "Boolean", false)].concat(
  edges.map(([name, type, v, o], i) => m(name, type, v, Object.assign({ alias: 100 + i, timestamp: T0 - 500 }, o)))));
const again = [
  ["Int8/min", "Int8", -5], ["Int16/min", "Int16", -300], ["Int32/min", "Int32", -70000],
  ["Int64/neg1", "Int64", Long.fromNumber(-5000000000)], ["UInt32/max", "UInt32", 3000000000],
  ["Float/third", "Float", -2.5], ["Double/neg", "Double", 1e300], ["Boolean/true", "Boolean", false],
  ["String/hello", "String", "again"],
];
step("NDATA", "edge1", "", 1, again.map(([name, type, v]) =>
  m(name, type, v, { alias: 100 + edges.findIndex((e) => e[0] === name), aliasOnly: true })));

begin("before-birth", "NDATA before its NBIRTH, DDATA before its DBIRTH");
step("NDATA", "edge2", "", 0, [m("t", "Double", 1.5, { alias: 1, aliasOnly: true })], { rebirth: "not born", landed: false });
step("NBIRTH", "edge2", "", 0, [bd(1), m("t", "Double", 1.0, { alias: 1 })]);
step("NDATA", "edge2", "", 1, [m("t", "Double", 2.0, { alias: 1, aliasOnly: true })]);
step("DDATA", "edge2", "pump", 2, [m("rpm", "Int32", 3, { alias: 2, aliasOnly: true })], { rebirth: "not born", landed: false });

begin("unknown-alias", "an NDATA using an alias its NBIRTH never gave");
step("NBIRTH", "edge3", "", 0, [bd(0), m("a", "Int16", 1, { alias: 1 }), m("b", "Int16", 2, { alias: 2 })]);
step("NDATA", "edge3", "", 1, [m("a", "Int16", -7, { alias: 1, aliasOnly: true }), m("?", "Int16", 9, { alias: 7, aliasOnly: true })],
  { rebirth: "unknown alias", unknown: [7] });

begin("seq", "a seq gap, then the wrap from 255 to 0");
step("NBIRTH", "edge4", "", 254, [bd(0), m("x", "UInt16", 1, { alias: 1 })]);
step("NDATA", "edge4", "", 255, [m("x", "UInt16", 2, { alias: 1, aliasOnly: true })]);
step("NDATA", "edge4", "", 0, [m("x", "UInt16", 3, { alias: 1, aliasOnly: true })]);
step("NDATA", "edge4", "", 2, [m("x", "UInt16", 4, { alias: 1, aliasOnly: true })], { rebirth: "seq gap", seqWant: 1 });
step("NDATA", "edge4", "", 3, [m("x", "UInt16", 5, { alias: 1, aliasOnly: true })]);

begin("device", "DBIRTH, DDATA by alias and by name, another device's alias, DDEATH, DDATA after it");
step("NBIRTH", "edge5", "", 0, [bd(3), m("uptime", "Int64", Long.fromNumber(10), { alias: 1 })]);
step("DBIRTH", "edge5", "pump", 1, [m("rpm", "UInt32", 1200, { alias: 10 }), m("state", "String", "on", { alias: 11 })]);
step("DDATA", "edge5", "pump", 2, [m("rpm", "UInt32", 1300, { alias: 10, aliasOnly: true }), m("state", "String", "off")]);
step("DDATA", "edge5", "pump", 3, [m("uptime", "Int64", Long.fromNumber(11), { alias: 1, aliasOnly: true })],
  { rebirth: "unknown alias", unknown: [1] });
step("DDEATH", "edge5", "pump", 4, []);
step("DDATA", "edge5", "pump", 5, [m("rpm", "UInt32", 1, { alias: 10, aliasOnly: true })], { rebirth: "not born", landed: false });
step("DBIRTH", "edge5", "pump", 6, [m("rpm", "UInt32", 0, { alias: 10 })]);
step("DDATA", "edge5", "pump", 7, [m("rpm", "UInt32", 5, { alias: 10, aliasOnly: true })]);

begin("death", "an NDEATH of an earlier session is ignored; the live one ends the node");
step("NBIRTH", "edge6", "", 0, [bd(5), m("v", "Float", 1.25, { alias: 1 })]);
step("NDEATH", "edge6", "", null, [bd(4)], { stale: true });
step("NDATA", "edge6", "", 1, [m("v", "Float", 2.5, { alias: 1, aliasOnly: true })]);
step("NDEATH", "edge6", "", null, [bd(5)]);
step("NDATA", "edge6", "", 2, [m("v", "Float", 3.5, { alias: 1, aliasOnly: true })], { rebirth: "not born", landed: false });

begin("out-of-range", "an Int8 value of 300 and a UInt8 of 256 are refused, the rest lands");
step("NBIRTH", "edge7", "", 0, [bd(0), m("i8", "Int8", 300, { alias: 1, invalid: true }),
  m("u8", "UInt8", 256, { alias: 2, invalid: true }), m("ok", "Int8", -3, { alias: 3 })]);

fs.writeFileSync(path.join(here, "expected.json"), JSON.stringify({
  generator: "sparkplug-payload " + require("sparkplug-payload/package.json").version,
  scenarios,
}, null, 1) + "\n");
console.log(`gen.js: ${scenarios.reduce((n, s) => n + s.steps.length, 0)} fixtures in ${outDir}`);

// Our RebirthRequest, decoded by Tahu's decoder.
const rebirth = path.join(here, "rebirth.bin");
if (fs.existsSync(rebirth)) {
  const p = sparkplug.decodePayload(fs.readFileSync(rebirth));
  const ms = p.metrics || [];
  const ok = ms.length === 1 && ms[0].name === "Node Control/Rebirth" && ms[0].type === "Boolean" &&
    ms[0].value === true && p.timestamp !== undefined && ms[0].timestamp !== undefined &&
    Long.fromValue(p.timestamp).toNumber() === 1700000000000;
  if (!ok) {
    console.error("gen.js: rebirth.bin is not a Rebirth request to Tahu's decoder:", JSON.stringify(p));
    process.exit(1);
  }
  console.log("gen.js: rebirth.bin decodes with Tahu's decoder as Node Control/Rebirth = true");
} else {
  console.error("gen.js: rebirth.bin missing: run the Go test TestRebirthRequestFixture with SPARKPLUG_WRITE_REBIRTH=1 first");
  process.exit(1);
}
