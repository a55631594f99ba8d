// The local Cosmos DB server of the tests: @vercel/cosmosdb-server, with its transactional
// batch made to behave as the service's does for the official Python SDK:
// - an operation other than a create takes its partition key from the request's header
//   (the Python SDK sends it there; the server looks for it in each operation);
// - an atomic batch is all or nothing: when an operation fails, those before it are undone;
// - a point read of an item that does not exist answers 404 (not 500).
// Usage: node server.js PORT   (HTTPS, the package's self-signed certificate)
"use strict";
const { AsyncLocalStorage } = require("async_hooks");
const lib = "@vercel/cosmosdb-server/lib";
const batch = require(`${lib}/handler/batch-documents`);
const operations = require(`${lib}/handler/_document-operations`);

const current = new AsyncLocalStorage();

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
        if (before) documents._set(before);
      });
    }
    return result;
  };
}

const original = batch.default;
batch.default = async (account, req, res, params) => {
  const state = { partitionKey: req.headers["x-ms-documentdb-partitionkey"], undo: [] };
  const body = await current.run(state, () => original(account, req, res, params));
  const atomic = String(req.headers["x-ms-cosmos-batch-atomic"]).toLowerCase() === "true";
  if (atomic && Array.isArray(body) && body.some((r) => r.statusCode >= 400)) {
    for (const undo of state.undo.reverse()) undo();
  }
  return body;
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

const { createHttpsServer } = require(lib);
const port = Number(process.argv[2] || 0);
const server = createHttpsServer().listen(port, "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`);
});
