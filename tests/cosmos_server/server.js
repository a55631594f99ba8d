// The local Cosmos DB server of the tests: @vercel/cosmosdb-server, with its transactional
// batch made to behave as the service's does for the official Python SDK:
// - an operation other than a create takes its partition key from the request's header
//   (the Python SDK sends it there; the server looks for it in each operation);
// - an atomic batch is all or nothing: when an operation fails, those before it are undone;
// - a point read of an item that does not exist answers 404 (not 500);
// - the change feed is incremental, as the service's: every write stamps the item with the
//   next log sequence number (`_lsn`, one counter for the server); a change-feed read
//   (`A-IM: Incremental Feed`) answers the items changed after the `If-None-Match` it sends
//   (all of them without one), oldest change first, at most `x-ms-max-item-count`, with the
//   last one's `_lsn` as its `etag`, and 304 Not Modified (the same `etag`) when nothing
//   changed after it. Latest-version mode: an item changed twice is there once, at its
//   last change; a deleted item is gone. One feed range (the server has one partition range).
// Usage: node server.js PORT   (HTTPS, the package's self-signed certificate)
"use strict";
const { AsyncLocalStorage } = require("async_hooks");
const lib = "@vercel/cosmosdb-server/lib";
const batch = require(`${lib}/handler/batch-documents`);
const operations = require(`${lib}/handler/_document-operations`);

const current = new AsyncLocalStorage();

const Items = require(`${lib}/account/items`).default;
let lsn = 0;
let restoring = false;
const uncommitted = new Set();  // the sequence numbers of batches still running
const setItem = Items.prototype._set;
Items.prototype._set = function (data) {
  if (restoring) return setItem.call(this, data);
  const stamped = { ...data, _lsn: ++lsn };
  const state = current.getStore();
  if (state) {
    state.lsns.push(stamped._lsn);
    uncommitted.add(stamped._lsn);
  }
  return setItem.call(this, stamped);
};

function read(collection, id, partitionKey) {
  return collection.documents._item("/id", id, JSON.parse(partitionKey)).read();
}

for (const name of ["createOperation", "upsertOperation", "replaceOperation", "deleteOperation",
                    "readOperation"]) {
  const operation = operations[name];
  operations[name] = (collection, input) => {
    const state = current.getStore();
    if (!state) return operation(collection, input);
    const given = input.partitionKey === undefined ? { ...input, partitionKey: state.partitionKey }
                                                   : input;
    const id = given.id !== undefined ? given.id : (given.resourceBody || {}).id;
    const before = name === "readOperation" ? null : read(collection, id, state.partitionKey);
    const result = operation(collection, given);
    if (result.statusCode < 400 && name !== "readOperation") {
      state.undo.push(() => {
        const documents = collection.documents;
        if (read(collection, id, state.partitionKey)) {
          documents.delete(id, JSON.parse(state.partitionKey));
        }
        if (before) {
          restoring = true;  // the item as it was, its change undone
          try { documents._set(before); } finally { restoring = false; }
        }
      });
    }
    return result;
  };
}

const original = batch.default;
batch.default = async (account, req, res, params) => {
  const state = { partitionKey: req.headers["x-ms-documentdb-partitionkey"], undo: [],
                  lsns: [] };
  try {
    const body = await current.run(state, () => original(account, req, res, params));
    const atomic = String(req.headers["x-ms-cosmos-batch-atomic"]).toLowerCase() === "true";
    if (atomic && Array.isArray(body) && body.some((r) => r.statusCode >= 400)) {
      for (const undo of state.undo.reverse()) undo();
    }
    return body;
  } finally {
    for (const n of state.lsns) uncommitted.delete(n);
  }
};

const readDocument = require(`${lib}/handler/read-document`);
const { parsePartitionKey } = require(`${lib}/utils/get-partition-from-header`);
const readOriginal = readDocument.default;
readDocument.default = (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  const header = req.headers["x-ms-documentdb-partitionkey"];
  if (collection.read() && header && header !== "[{}]"
      && !collection.document(params.docId, parsePartitionKey(header, params.docId)).read()) {
    res.statusCode = 404;
    return { code: "NotFound", message: "Entity with the specified id does not exist." };
  }
  return readOriginal(account, req, res, params);
};

const readDocuments = require(`${lib}/handler/read-documents`);
const readDocumentsOriginal = readDocuments.default;
readDocuments.default = async (account, req, res, params) => {
  if (!req.headers["a-im"]) return readDocumentsOriginal(account, req, res, params);
  delete req.headers["a-im"];  // the server's own answer to it: always 304 after the first read
  const collection = account.database(params.dbId).collection(params.collId);
  if (!collection.read()) {
    res.statusCode = 404;
    return { code: "NotFound", message: "Resource Not Found" };
  }
  const since = Number(String(req.headers["if-none-match"] || "0").replace(/"/g, "")) || 0;
  const header = req.headers["x-ms-documentdb-partitionkey"];
  const partition = header ? JSON.stringify(JSON.parse(header)) : null;
  const key = (collection.read().partitionKey || { paths: [] }).paths[0];
  const inPartition = (item) => partition === null || !key
    || JSON.stringify([item[key.slice(1)]]) === partition;
  // A batch's changes are seen once it is over, and nothing written after them before.
  const visible = uncommitted.size ? Math.min(...uncommitted) : Infinity;
  const changed = [...collection.documents._data.values()].map((i) => i.read())
    .filter((item) => item._lsn > since && item._lsn < visible && inPartition(item))
    .sort((a, b) => a._lsn - b._lsn);
  const most = Number(req.headers["x-ms-max-item-count"] || -1);
  const page = most > 0 ? changed.slice(0, most) : changed;
  if (!page.length) {
    res.statusCode = 304;
    res.setHeader("etag", `"${since}"`);
    return {};
  }
  res.setHeader("etag", `"${page[page.length - 1]._lsn}"`);
  res.setHeader("x-ms-item-count", String(page.length));
  return { _rid: collection.read()._rid, Documents: page, _count: page.length };
};

const { createHttpsServer } = require(lib);
const port = Number(process.argv[2] || 0);
const server = createHttpsServer().listen(port, "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`);
});
