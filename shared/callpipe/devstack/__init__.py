"""The local stack: emulators, provisioning from the topology, functions, demo traffic."""
