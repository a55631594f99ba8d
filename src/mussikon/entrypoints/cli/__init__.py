"""The `mussikon` command line: one module per command group (`events`, `dlq`, `sagas` …),
`common` for what they share, `app` assembling them."""
