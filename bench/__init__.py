"""flowrun benchmark: the order saga under load against a hand-written nats-py baseline (`make bench`)."""
