"""Sagas (process managers) with durable state, compensation and timeouts.

`engine` runs any `SagaDefinition` (`steps`); its instances live in the document store
(`journal`, `state`), their timeouts too (`timeouts`), driven by the `Clock` port.
`application` is the specification's MusicianApplicationSaga, `booking` takes an
accepted application to a paid contract, `reservations` keeps musicians' days, and
`runtime` wires them for bootstrap. `cli` is `mussikon sagas …`.
"""
