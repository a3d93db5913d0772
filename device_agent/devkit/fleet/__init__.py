"""A virtual fleet on one machine: a local CA, a mosquitto broker on loopback with mutual TLS and per-thing
ACLs, and N virtual devices (each a local nucleus in its own process) that start in quarantine and are
promoted to the production deployment when the verifier approves them. See docs/virtual-fleet.md.

    layout      where everything lives under the fleet root
    spec        what a fleet is made of (devices, rejected ones, intervals), saved once at `fleet up`
    identity    the CA and every certificate (idempotent: an existing root is reused)
    acl         the broker's ACL, mirroring the production IoT policy
    broker      the broker with TLS, CRL, ACL and persistent sessions (and mosquitto installed if missing)
    mqtt        a small MQTT 5 client over mutual TLS for the fleet's own identities
    verifier    the verifier service beside the fleet: its policy, registry and process
    components  the quarantine and production component sets and their configuration
    device      one device's nucleus process: start, stop, kill, and its orphans
    observer    what the observer identity sees reach the broker: telemetry, health, reports, verdicts
    state       the fleet's state file (pids, port, groups), read by `fleet status` and `fleet down`
    supervisor  the long-running process that owns the broker and the devices and applies promotions
    control     the supervisor's control socket (chaos, stop)
    status      the `fleet status` table and JSON
    processes   finding and ending every process a fleet started
    cli         `gg-virtual fleet up|status|down|chaos`
"""
