"""A gRPC client that nobody on this project wrote (grpcio, grpcio-health-checking,
grpcio-reflection), used by tests/tests/fleet_enroll.rs to talk to a real
rewind-coordinator. Prints one JSON object per call.

usage: fleet_grpc_client.py ADDR CA_PEM COMMAND [ARGS]
  health                        statuses of "", rewind.v1.Fleet, rewind.v1.Admin
  reflect                       services listed by reflection v1 and v1alpha
  connect [KEY CERT]            open Fleet.Connect (optionally with a client cert), report the status
  connect-as KEY CERT WHAT      Fleet.Connect with a client cert, sending WHAT first:
                                silent (nothing), garbage (malformed protobuf), big (a 5 MiB message)
  admin-noauth                  Admin.ListAgents without a bearer token, report the status
"""
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

addr, ca_path, cmd, *rest = sys.argv[1:]
ca = open(ca_path, "rb").read()
key = cert = None
if cmd in ("connect", "connect-as") and rest:
    key, cert = open(rest[0], "rb").read(), open(rest[1], "rb").read()
creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
channel = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])
out = {}

if cmd == "health":
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ["", "rewind.v1.Fleet", "rewind.v1.Admin"]:
        r = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        out[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
elif cmd == "reflect":
    # v1 and v1alpha share their message layout; only the service name differs.
    for version in ["v1", "v1alpha"]:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        responses = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        out[version] = sorted(s.name for r in responses for s in r.list_services_response.service)
elif cmd == "connect":
    call = channel.stream_stream("/rewind.v1.Fleet/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        # One empty AgentMessage; the certificate is checked before it matters.
        for _ in call(iter([b""]), timeout=10):
            break
        out["code"] = "OK"
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
elif cmd == "connect-as":
    what = rest[2]
    call = channel.stream_stream("/rewind.v1.Fleet/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    if what == "silent":
        import threading
        never = threading.Event()

        def requests():
            never.wait(60)
            return
            yield

        messages = requests()
    elif what == "garbage":
        messages = iter([b"\xff\xff\xff\xff\x0f garbage"])
    else:
        # Field 1 (hello), length-delimited, 5 MiB: over the 4 MiB limit.
        body = b"\x0a" + bytes([0x80, 0x80, 0xc0, 0x02]) + b"x" * (5 << 20)
        messages = iter([body])
    try:
        for _ in call(messages, timeout=30):
            break
        out["code"] = "OK"
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
elif cmd == "admin-noauth":
    call = channel.unary_unary("/rewind.v1.Admin/ListAgents", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(b"", timeout=10)
        out["code"] = "OK"
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
else:
    sys.exit(f"unknown command {cmd}")
print(json.dumps(out))
