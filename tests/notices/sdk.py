"""The real SDK clients against the simulator: botocore's IMDS fetchers, google-auth's metadata module.

Each check gets a namespace of its own, raises ``AssertionError`` when the client does not get
what the cloud would give it, and returns one line of what it observed. google-auth reads its
metadata host from the environment when imported, so it runs in a subprocess with
``GCE_METADATA_HOST`` and ``GCE_METADATA_IP`` pointing at the simulator, as a user would set them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from typing import Any

from runner.sim.metadata import MetadataSimulator

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method: str, url: str, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with _NO_PROXY.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def _aws(sim: MetadataSimulator, ns: str, **options: Any) -> str:
    sim.configure(ns, "aws", **options)
    sim.preempt("aws", 120, ns)
    return f"{sim.url}/ns/{ns}/"


def _fetcher(base: str, cls: str = "IMDSFetcher") -> Any:
    import botocore.utils

    return getattr(botocore.utils, cls)(timeout=1, num_attempts=1, base_url=base, env={})


def botocore_v2(sim: MetadataSimulator) -> str:
    base = _aws(sim, "sdk-botocore-v2")
    fetcher = _fetcher(base)
    token = fetcher._fetch_metadata_token()
    assert token, "botocore got no token"
    response = fetcher._get_request("latest/meta-data/spot/instance-action", None, token)
    action = json.loads(response.text)["action"]
    assert action == "terminate", response.text
    region = _fetcher(base, "InstanceMetadataRegionFetcher").retrieve_region()
    assert region == "us-east-1", region
    return f"token {len(token)} chars; action {action}; region {region}"


def botocore_hop1(sim: MetadataSimulator) -> str:
    fetcher = _fetcher(_aws(sim, "sdk-botocore-hop1", hop_limit=1, imdsv1=True))
    token = fetcher._fetch_metadata_token()
    assert token is None, "a token arrived through a hop limit of 1"
    response = fetcher._get_request("latest/meta-data/spot/instance-action", None, None)
    assert json.loads(response.text)["action"] == "terminate", response.text
    return "no token (read timeout); tokenless instance-action: terminate"


def botocore_v2only_hop1(sim: MetadataSimulator) -> str:
    import botocore.utils

    fetcher = _fetcher(_aws(sim, "sdk-botocore-v2only", hop_limit=1))
    assert fetcher._fetch_metadata_token() is None
    try:
        fetcher._get_request("latest/meta-data/spot/instance-action", None, None)
    except botocore.utils._RetriesExceededError:
        status = call("GET", f"{sim.url}/ns/sdk-botocore-v2only/latest/meta-data/spot/instance-action")[0]
        assert status == 401, status
        return "no token; the tokenless read answers 401 and botocore gives up (_RetriesExceededError)"
    raise AssertionError("botocore read instance-action without a token where IMDSv2 is required")


def botocore_token_403(sim: MetadataSimulator) -> str:
    fetcher = _fetcher(_aws(sim, "sdk-botocore-403", token_status=403, imdsv1=True))
    assert fetcher._fetch_metadata_token() is None
    response = fetcher._get_request("latest/meta-data/instance-id", None, None)
    assert response.text.startswith("i-"), response.text
    return f"no token (403); tokenless instance-id {response.text}"


def aws_xff(sim: MetadataSimulator) -> str:
    base = _aws(sim, "sdk-aws-xff")
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
    refused = call("PUT", base + "latest/api/token", {**ttl, "X-Forwarded-For": "172.17.0.2"})[0]
    plain = call("PUT", base + "latest/api/token", ttl)[0]
    assert (refused, plain) == (403, 200), (refused, plain)
    return "with X-Forwarded-For: 403; without: 200"


GOOGLE_AUTH = textwrap.dedent("""
    import json, sys, threading, time, urllib.request
    import google.auth.transport.requests as transport
    from google.auth import compute_engine
    from google.auth.compute_engine import _metadata
    control = sys.argv[1]
    request = transport.Request()
    out = {"ping": _metadata.ping(request), "on_gce": _metadata.is_on_gce(request),
           "preempted": _metadata.get(request, "instance/preempted"),
           "maintenance": _metadata.get(request, "instance/maintenance-event"),
           "project": _metadata.get_project_id(request)}
    post = lambda: urllib.request.urlopen(urllib.request.Request(control, data=b"", method="POST"), timeout=5)
    threading.Timer(0.5, post).start()
    started = time.monotonic()
    hang = {"wait_for_change": "true", "timeout_sec": "20"}
    out["waited"] = _metadata.get(request, "instance/preempted", params=hang)
    out["wait_s"] = round(time.monotonic() - started, 2)
    credentials = compute_engine.Credentials()
    credentials.refresh(request)
    out["token"] = bool(credentials.token)
    print(json.dumps(out))
""")


def google_auth(sim: MetadataSimulator) -> str:
    ns = "sdk-google-auth"
    sim.configure(ns, "gcp")
    host = f"{sim.url.split('//', 1)[1]}/ns/{ns}"
    env = {**os.environ, "GCE_METADATA_HOST": host, "GCE_METADATA_IP": host, "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    control = f"{sim.url}/_sim/preempt?cloud=gcp&notice=30&ns={ns}"
    proc = subprocess.run([sys.executable, "-c", GOOGLE_AUTH, control], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-800:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    want = {"ping": True, "on_gce": True, "preempted": "FALSE", "maintenance": "NONE", "project": "sim-project",
            "waited": "TRUE", "token": True}
    assert {k: out[k] for k in want} == want, out
    assert out["wait_s"] < 5, out
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr[-800:]
    return (f"ping {out['ping']}, is_on_gce {out['on_gce']}, preempted {out['preempted']}, maintenance-event "
            f"{out['maintenance']}, project {out['project']}; hanging GET back {out['wait_s']} s after the change; "
            "Credentials.refresh: a token")


def gcp_flavor(sim: MetadataSimulator) -> str:
    ns = "sdk-gcp-flavor"
    sim.configure(ns, "gcp")
    base = f"{sim.url}/ns/{ns}"
    status, headers, _ = call("GET", base + "/computeMetadata/v1/instance/preempted")
    assert (status, headers["Metadata-Flavor"]) == (403, "Google"), status
    status, headers, body = call("GET", base + "/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"})
    assert (status, headers["Metadata-Flavor"], body, len(headers["ETag"])) == (200, "Google", b"FALSE", 16)
    return "without the header: 403; with it: 200 FALSE, Metadata-Flavor: Google, a 16-digit ETag"


def azure_headers(sim: MetadataSimulator) -> str:
    ns = "sdk-azure-headers"
    sim.configure(ns, "azure")
    base = f"{sim.url}/ns/{ns}/metadata/scheduledevents"
    no_header = call("GET", base + "?api-version=2020-07-01")[0]
    no_version = call("GET", base, {"Metadata": "true"})[0]
    bad_post = call("POST", base + "?api-version=2020-07-01", {"Metadata": "true"}, b"not json")[0]
    ok = call("GET", base + "?api-version=2020-07-01", {"Metadata": "true"})
    assert (no_header, no_version, bad_post, ok[0]) == (400, 400, 400, 200), (no_header, no_version, bad_post, ok[0])
    assert json.loads(ok[2]) == {"DocumentIncarnation": 1, "Events": []}, ok[2]
    return "no Metadata header: 400; no api-version: 400; malformed POST: 400; the document: 200"
