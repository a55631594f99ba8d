"""Transport adapters: the in-process bus and RabbitMQ."""
