"""The Azure Cosmos DB stores, on the official SDK's asyncio client (`azure.cosmos.aio`).

`account`: the client, the containers and what every request costs; `events`: the event store,
in the specification's container and item shape; `documents`: the document store, in a
container of its own. docs/cosmos.md says what each relies on and what a reader may rely on.
"""
