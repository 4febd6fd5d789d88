"""NATS and JetStream: connection and auth, publish, pull, KV, provisioning, inspection, servers, permissions."""
