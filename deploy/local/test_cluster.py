#!/usr/bin/env python3
"""End-to-end test of a cluster started by deploy/local/run-cluster.sh.

    python3 deploy/local/test_cluster.py CLUSTER_DIR/cluster.env

Through the load balancer, exactly as users and backends reach a deployment:
WebSocket clients spread over every node, a gRPC publish reaches all of them,
a client publish crosses nodes through Redis, Prometheus (the real one, over
its HTTP API) counts exactly the open sockets across the nodes, the alert
rules evaluate and every dashboard query runs, a node that gets SIGTERM closes
its clients with 1001, leaves the load balancer and exits 0 while the rest
keep serving, and a Redis outage turns every node unready, fires
RoomcastAdapterDown, and heals by itself.

gRPC stubs are generated from proto/roomcast/v1/*.proto at start with
grpcio-tools. Needs: pip install websockets grpcio grpcio-tools.
"""

import asyncio
import atexit
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request

import grpc
from grpc_tools import protoc
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBPROTOCOL = "roomcast.v1.json"
CLIENTS = 6


def load_env(path):
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def load_stubs():
    out = tempfile.mkdtemp(prefix="roomcast-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto/roomcast/v1").glob("*.proto"))
    rc = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if rc != 0:
        raise RuntimeError("protoc failed on proto/roomcast/v1")
    sys.path.insert(0, out)
    from roomcast.v1 import control_pb2, control_pb2_grpc  # noqa: E402

    return control_pb2, control_pb2_grpc


pb, pb_grpc = load_stubs()


class Client:
    """One WebSocket session through the load balancer."""

    def __init__(self, ws, client_id, node):
        self.ws = ws
        self.client_id = client_id
        self.node = node
        self.next_id = 10

    @classmethod
    async def open(cls, lb):
        ws = await connect(f"ws://{lb}/ws", subprotocols=[SUBPROTOCOL], open_timeout=5, ping_interval=None)
        await ws.send(json.dumps({"op": "connect", "id": 1, "client": "cluster-test"}))
        reply = await recv_op(ws, "connected")
        return cls(ws, reply["client_id"], reply["node"])

    async def command(self, op, expect, **fields):
        self.next_id += 1
        await self.ws.send(json.dumps({"op": op, "id": self.next_id, **fields}))
        return await recv_op(self.ws, expect, id=self.next_id)


async def recv_op(ws, op, timeout=5.0, **match):
    """The next frame with this op (and fields); other frames are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {op} {match or ''} within {timeout}s")
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), left))
        except (asyncio.TimeoutError, TimeoutError):
            raise AssertionError(f"no {op} {match or ''} within {timeout}s") from None
        if frame.get("op") == "error" and (not match.get("id") or frame.get("id") == match["id"]):
            raise AssertionError(f"error reply: {frame}")
        if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
            return frame


class Prometheus:
    def __init__(self, url):
        self.url = url

    def query(self, q):
        u = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        body = json.loads(urllib.request.urlopen(u, timeout=5).read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, q):
        r = self.query(q)
        return float(r[0]["value"][1]) if r else None

    async def wait_for(self, q, want, timeout=20.0):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.scalar(q)
            if got == want:
                return got
            await asyncio.sleep(0.5)
        raise AssertionError(f"Prometheus: {q} = {got}, expected {want} within {timeout}s")


class Cluster:
    def __init__(self, env):
        self.env = env
        self.lb = env["LB_HTTP"]
        self.nodes = int(env["NODES"])
        self.prom = Prometheus(env["PROM_URL"])
        self.channel = grpc.insecure_channel(env["LB_GRPC"])
        self.control = pb_grpc.ControlStub(self.channel)
        self.clients = []

    def publish(self, room, data, stub=None):
        req = pb.PublishRequest(room=room, data=json.dumps(data).encode())
        return (stub or self.control).Publish(req, timeout=5)

    async def open_clients(self, n):
        new = [await Client.open(self.lb) for _ in range(n)]
        self.clients += new
        return new

    async def close(self, clients):
        for c in clients:
            await c.ws.close()
            self.clients.remove(c)


# ---------------------------------------------------------------- tests


async def test_info_lists_every_node(c):
    reply = c.control.Info(pb.InfoRequest(), timeout=5)
    ids = sorted(n.id for n in reply.nodes)
    want = sorted(f"node-{i}" for i in range(1, c.nodes + 1))
    assert ids == want, f"Info through the load balancer lists {ids}, want {want}"


async def test_clients_spread_over_every_node(c):
    clients = await c.open_clients(CLIENTS)
    spread = {}
    for cl in clients:
        spread[cl.node] = spread.get(cl.node, 0) + 1
    print(f"    {CLIENTS} sockets through the load balancer: {dict(sorted(spread.items()))}")
    assert len(spread) == c.nodes, f"round-robin reached only {sorted(spread)}"


async def test_grpc_publish_reaches_every_client(c):
    room = "cluster.fanout"
    for cl in c.clients:
        await cl.command("subscribe", "subscribed", room=room)
    c.publish(room, {"hello": "cluster"})
    for cl in c.clients:
        msg = await recv_op(cl.ws, "message", room=room)
        assert msg["data"] == {"hello": "cluster"}, msg
    # Also straight to one node, bypassing the load balancer.
    direct = pb_grpc.ControlStub(grpc.insecure_channel(c.env["NODE_2_GRPC"]))
    c.publish(room, {"via": "node-2"}, stub=direct)
    for cl in c.clients:
        msg = await recv_op(cl.ws, "message", room=room)
        assert msg["data"] == {"via": "node-2"}, msg


async def test_client_publish_crosses_nodes(c):
    room = "cluster.chat"
    for cl in c.clients:
        await cl.command("subscribe", "subscribed", room=room)
    sender = c.clients[0]
    await sender.command("publish", "published", room=room, data={"from": sender.node})
    others = [cl for cl in c.clients if cl.node != sender.node]
    assert others, "every client landed on one node"
    for cl in others:
        msg = await recv_op(cl.ws, "message", room=room)
        assert msg["data"] == {"from": sender.node}, msg


async def test_prometheus_counts_open_sockets(c):
    await c.prom.wait_for('count(up{job="roomcast"} == 1)', float(c.nodes))
    await c.prom.wait_for("sum(roomcast_connections)", float(len(c.clients)))
    await c.prom.wait_for("count(roomcast_connections)", float(c.nodes))
    await c.close(c.clients[:2])
    await c.prom.wait_for("sum(roomcast_connections)", float(len(c.clients)))
    per_node = {r["metric"].get("node"): r["value"][1] for r in c.prom.query("roomcast_connections")}
    print(f"    roomcast_connections per node: {dict(sorted(per_node.items()))}")
    # Replace the two, so the drain test has clients on every node.
    await c.open_clients(2)
    await c.prom.wait_for("sum(roomcast_connections)", float(len(c.clients)))


async def test_alert_rules_loaded_and_quiet(c):
    body = json.loads(urllib.request.urlopen(f"{c.prom.url}/api/v1/rules", timeout=5).read())
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") not in ("ok", "unknown")]
    assert len(rules) >= 6, f"Prometheus loaded {len(rules)} rules from deploy/prometheus/rules"
    assert not bad, f"rules failing to evaluate: {bad}"
    firing = c.prom.query('ALERTS{alertstate="firing"}')
    assert not firing, f"alerts firing on a healthy cluster: {[a['metric'] for a in firing]}"


async def test_dashboard_queries_run(c):
    """Every query of the Grafana dashboard runs on the real Prometheus, and
    the core panels show data after the traffic above."""
    dash = json.loads((ROOT / "deploy/grafana/dashboards/roomcast.json").read_text())
    exprs = [
        t["expr"] for p in dash["panels"] for t in p.get("targets", []) if t.get("expr")
    ]
    await asyncio.sleep(3)  # a few scrapes after the publications
    empty = []
    for e in exprs:
        q = e.replace("$instance", ".*").replace("$__rate_interval", "1m")
        if not c.prom.query(q):
            empty.append(e)
    core = ["sum(roomcast_connections", "roomcast_messages_sent_total", "histogram_quantile(0.99, sum by (le) (rate(roomcast_delivery_seconds_bucket",
            "roomcast_publications_total", "roomcast_grpc_requests_total", "roomcast_adapter_up", "roomcast_ready"]
    missing = [k for k in core if all(k not in e for e in exprs if e not in empty)]
    print(f"    {len(exprs)} dashboard queries ran, {len(exprs) - len(empty)} with data")
    assert not missing, f"core dashboard panels without data: {missing}"


async def test_sigterm_drains_one_node(c):
    victim = f"node-{c.nodes}"
    pid = int(c.env[f"NODE_{c.nodes}_PID"])
    on_victim = [cl for cl in c.clients if cl.node == victim]
    others = [cl for cl in c.clients if cl.node != victim]
    assert on_victim, f"no client on {victim}"
    os.kill(pid, signal.SIGTERM)
    for cl in on_victim:
        try:
            frame = await asyncio.wait_for(cl.ws.recv(), 10)
            raise AssertionError(f"expected close 1001, got frame {frame!r}")
        except (asyncio.TimeoutError, TimeoutError):
            raise AssertionError(f"{victim} did not close its client within 10s of SIGTERM") from None
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            assert code == 1001, f"{victim} closed a client with {code}, want 1001"
        c.clients.remove(cl)
    exit_file = pathlib.Path(c.env["CLUSTER_DIR"]) / f"{victim}.exit"
    deadline = time.monotonic() + 15
    while not exit_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert exit_file.exists(), f"{victim} still running 15s after SIGTERM"
    status = exit_file.read_text().strip()
    assert status == "0", f"{victim} exited with status {status}, want 0"
    # The others keep serving, and new clients only land on live nodes.
    room = "cluster.after-drain"
    fresh = await c.open_clients(len(on_victim) + 2)
    assert all(cl.node != victim for cl in fresh), "the load balancer still sends clients to the drained node"
    for cl in others + fresh:
        await cl.command("subscribe", "subscribed", room=room)
    c.publish(room, {"after": "drain"})
    for cl in others + fresh:
        msg = await recv_op(cl.ws, "message", room=room)
        assert msg["data"] == {"after": "drain"}, msg
    await c.prom.wait_for('count(up{job="roomcast"} == 1)', float(c.nodes - 1))
    await c.prom.wait_for("sum(roomcast_connections)", float(len(c.clients)))


async def test_redis_outage_alerts_and_recovers(c):
    """Redis frozen (SIGSTOP): every node reports the adapter down and turns
    unready, the load balancer refuses new clients, RoomcastAdapterDown
    fires; after SIGCONT the nodes recover by themselves."""
    live = float(len({cl.node for cl in c.clients}))
    redis_pid = int(c.env["REDIS_PID"])
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        await c.prom.wait_for("sum(roomcast_adapter_up)", 0.0, timeout=30)
        await c.prom.wait_for("sum(roomcast_ready)", 0.0, timeout=10)
        await asyncio.sleep(1.5)  # the load balancer's health checks
        try:
            cl = await Client.open(c.lb)
            await cl.ws.close()
            raise AssertionError("the load balancer accepted a client while no node was ready")
        except AssertionError:
            raise
        except Exception as e:  # the upgrade is refused (503 from HAProxy)
            print(f"    new client refused while Redis is down: {type(e).__name__}: {e}")
        await c.prom.wait_for('count(ALERTS{alertname="RoomcastAdapterDown", alertstate="firing"})', live, timeout=60)
        print(f"    RoomcastAdapterDown firing for {live:g} nodes")
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    await c.prom.wait_for("sum(roomcast_ready)", live, timeout=60)
    room = "cluster.after-outage"
    await c.open_clients(2)
    for cl in c.clients:
        await cl.command("subscribe", "subscribed", room=room)
    c.publish(room, {"after": "outage"})
    for cl in c.clients:
        msg = await recv_op(cl.ws, "message", room=room)
        assert msg["data"] == {"after": "outage"}, msg


test_redis_outage_alerts_and_recovers.timeout = 180

TESTS = [
    test_info_lists_every_node,
    test_clients_spread_over_every_node,
    test_grpc_publish_reaches_every_client,
    test_client_publish_crosses_nodes,
    test_prometheus_counts_open_sockets,
    test_alert_rules_loaded_and_quiet,
    test_dashboard_queries_run,
    test_sigterm_drains_one_node,
    test_redis_outage_alerts_and_recovers,
]


async def main(env_path):
    c = Cluster(load_env(env_path))
    passed = failed = 0
    for t in TESTS:
        name = t.__name__
        try:
            await asyncio.wait_for(t(c), getattr(t, "timeout", 60))
            print(f"PASS {name}")
            passed += 1
        except Exception as e:  # report every test, then fail the run
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
            failed += 1
    for cl in list(c.clients):
        await cl.ws.close()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(sys.argv[1])))
