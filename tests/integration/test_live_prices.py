"""Live prices through the real SDK clients: moto's EC2 for spot price history, and local HTTP stand-ins
that answer as the AWS price list (JSON 1.1, signed requests), the Azure retail prices API and the GCP
Cloud Billing catalog (OAuth refresh, then bearer tokens) do, with their response shapes.

No cloud is reached: every endpoint is pointed here by environment (AWS_ENDPOINT_URL[_PRICING],
RUNNER_AZURE_PRICES_URL, RUNNER_GCP_BILLING_URL, a credentials file whose token_uri is the stand-in).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.cost.live import live_price
from runner.cost.prices import price_for_spec
from runner.cost.table import shipped_prices
from runner.spec import spec_from_dict

TODAY = dt.date.today().isoformat()


def today(date: str) -> bool:
    """True for the date this module was imported or today's: a run may cross midnight."""
    return date in (TODAY, dt.date.today().isoformat())
AWS_SECRET = "aws-secret-value-0123456789"
GCP_TOKEN = "ya29.stand-in-access-token"


def _aws_product(instance_type: str, region: str, usd: str, os_name: str = "Linux") -> str:
    """One PriceList item as the AWS price list returns it (a JSON document inside a string)."""
    sku = "JRTCKXETXF" + instance_type
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": sku, "attributes": {
            "instanceType": instance_type, "regionCode": region, "location": "US East (N. Virginia)",
            "operatingSystem": os_name, "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
            "licenseModel": "No License required", "vcpu": "4", "memory": "16 GiB"}},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {
            "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [], "rateCode": "x",
                "description": f"${usd} per On Demand {os_name} {instance_type} Instance Hour",
                "pricePerUnit": {"USD": usd}}},
            "sku": sku, "effectiveDate": "2024-06-01T00:00:00Z", "offerTermCode": "JRTCKXETXF",
            "termAttributes": {}}}},
        "version": "20240601000000", "publicationDate": "2024-06-01T00:00:00Z"})


def _azure_item(sku_name: str, product: str, price: float, arm_sku: str = "Standard_NC4as_T4_v3",
                region: str = "eastus") -> dict[str, Any]:
    return {"currencyCode": "USD", "tierMinimumUnits": 0.0, "retailPrice": price, "unitPrice": price,
            "armRegionName": region, "location": "US East", "effectiveStartDate": "2024-01-01T00:00:00Z",
            "meterId": "0d6ee0f4-0000-0000-0000-000000000000", "meterName": sku_name, "productId": "DZH318Z0BQ4H",
            "skuId": "DZH318Z0BQ4H/00TG", "availabilityId": None, "productName": product, "skuName": sku_name,
            "serviceName": "Virtual Machines", "serviceId": "DZH313Z7MMC8", "serviceFamily": "Compute",
            "unitOfMeasure": "1 Hour", "type": "Consumption", "isPrimaryMeterRegion": True, "armSkuName": arm_sku}


def _gcp_sku(description: str, usage: str, nanos: int, regions: list[str], unit: str = "h") -> dict[str, Any]:
    sku_id = f"{abs(hash(description + usage)) % 10**12:012d}"
    return {"name": f"services/6F81-5844-456A/skus/{sku_id}", "skuId": sku_id, "description": description,
            "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute",
                         "resourceGroup": "N1Standard", "usageType": usage},
            "serviceRegions": regions,
            "pricingInfo": [{"summary": "", "effectiveTime": "2024-06-01T00:00:00Z", "currencyConversionRate": 1,
                             "pricingExpression": {"usageUnit": unit, "displayQuantity": 1, "usageUnitDescription":
                                                   "hour", "baseUnit": "s", "baseUnitConversionFactor": 3600,
                                                   "tieredRates": [{"startUsageAmount": 0, "unitPrice": {
                                                       "currencyCode": "USD", "units": "0", "nanos": nanos}}]},
                             "aggregationInfo": {"aggregationLevel": "ACCOUNT", "aggregationInterval": "DAILY"}}],
            "serviceProviderName": "Google", "geoTaxonomy": {"type": "MULTI_REGIONAL", "regions": regions}}


AMERICAS = ["us-central1", "us-east1", "us-west1"]
GCP_PAGES = [
    [_gcp_sku("N1 Predefined Instance Core running in Americas", "OnDemand", 31611000, AMERICAS),
     _gcp_sku("N1 Predefined Instance Ram running in Americas", "OnDemand", 4237000, AMERICAS, "GiBy.h"),
     _gcp_sku("N1 Predefined Instance Core running in EMEA", "OnDemand", 34783000, ["europe-west4"]),
     _gcp_sku("Commitment v1: N1 Predefined Instance Core in Americas for 1 Year", "Commit1Yr", 19915000, AMERICAS),
     _gcp_sku("Spot Preemptible N1 Predefined Instance Core running in Americas", "Preemptible", 6655000, AMERICAS)],
    [_gcp_sku("Spot Preemptible N1 Predefined Instance Ram running in Americas", "Preemptible", 892000, AMERICAS,
              "GiBy.h"),
     _gcp_sku("Nvidia Tesla T4 GPU running in Americas", "OnDemand", 350000000, AMERICAS),
     _gcp_sku("Spot Preemptible Nvidia Tesla T4 GPU running in Americas", "Preemptible", 110000000, AMERICAS),
     _gcp_sku("Licensing Fee for Windows Server on N1", "OnDemand", 46000000, AMERICAS)],
]


class StandIn(BaseHTTPRequestHandler):
    """Answers as the AWS price list, the Azure retail prices API and the GCP billing catalog."""

    server: Any  # the ThreadingHTTPServer, carrying ``seen`` and ``fail``

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/token":  # OAuth 2.0 refresh-token grant
            form = urllib.parse.parse_qs(body.decode())
            self.server.seen.append(("gcp-token", form))
            return self._send(200, {"access_token": GCP_TOKEN, "expires_in": 3600, "token_type": "Bearer"})
        target = self.headers.get("X-Amz-Target", "")
        self.server.seen.append(("aws-pricing", {"target": target, "auth": self.headers.get("Authorization", ""),
                                                 "body": json.loads(body)}))
        if "aws" in self.server.fail:
            data = json.dumps({"__type": "AccessDeniedException", "message": "User is not authorized"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        filters = {f["Field"]: f["Value"] for f in json.loads(body)["Filters"]}
        catalog = [("g4dn.xlarge", "us-east-1", "0.5260000000"), ("m5.xlarge", "eu-west-1", "0.2140000000")]
        items = [_aws_product(t, r, usd) for t, r, usd in catalog
                 if filters.get("instanceType") == t and filters.get("regionCode") == r]
        self._send(200, {"FormatVersion": "aws_v1", "PriceList": items}, "application/x-amz-json-1.1")

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/api/retail/prices":
            self.server.seen.append(("azure", query))
            if "azure" in self.server.fail:
                return self._send(500, {"error": "internal"})
            region = re.search(r"armRegionName eq '([^']+)'", query["$filter"]).group(1)
            sku = re.search(r"armSkuName eq '([^']+)'", query["$filter"]).group(1)
            if sku != "Standard_NC4as_T4_v3" or region != "eastus":
                return self._send(200, {"BillingCurrency": "USD", "CustomerEntityId": "Default",
                                        "CustomerEntityType": "Retail", "Items": [], "NextPageLink": None,
                                        "Count": 0})
            if query.get("$skip") != "100":
                items = [_azure_item("NC4as T4 v3", "Virtual Machines NCasT4_v3 Series Windows", 0.71),
                         _azure_item("NC4as T4 v3", "Virtual Machines NCasT4_v3 Series", 0.526)]
                nxt = f"http://{self.headers['Host']}/api/retail/prices?{url.query}&$skip=100"
            else:
                items = [_azure_item("NC4as T4 v3 Low Priority", "Virtual Machines NCasT4_v3 Series", 0.1052),
                         _azure_item("NC4as T4 v3 Spot", "Virtual Machines NCasT4_v3 Series Windows", 0.3),
                         _azure_item("NC4as T4 v3 Spot", "Virtual Machines NCasT4_v3 Series", 0.1578)]
                nxt = None
            return self._send(200, {"BillingCurrency": "USD", "CustomerEntityId": "Default",
                                    "CustomerEntityType": "Retail", "Items": items, "NextPageLink": nxt,
                                    "Count": len(items)})
        if url.path == "/v1/services/6F81-5844-456A/skus":
            self.server.seen.append(("gcp", {**query, "auth": self.headers.get("Authorization", "")}))
            if "gcp" in self.server.fail:
                return self._send(403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}})
            if self.headers.get("Authorization") != f"Bearer {GCP_TOKEN}":
                return self._send(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
            page = int(query.get("pageToken") or 0)
            token = str(page + 1) if page + 1 < len(GCP_PAGES) else ""
            return self._send(200, {"skus": GCP_PAGES[page], "nextPageToken": token})
        self._send(404, {"error": "not found"})


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.seen, server.fail = [], set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, standin: Any) -> Any:
    """A private data folder (so the price cache is fresh), live prices on, endpoints at the stand-ins."""
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNNER_LIVE_PRICES", "1")
    monkeypatch.delenv("RUNNER_PRICES", raising=False)
    monkeypatch.setenv("RUNNER_AZURE_PRICES_URL", f"{standin.url}/api/retail/prices")
    monkeypatch.setenv("RUNNER_GCP_BILLING_URL", f"{standin.url}/v1")
    standin.seen.clear()
    standin.fail.clear()
    return standin


@pytest.fixture
def aws_env(env: Any, moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # moto takes any; the logs must not show it
    monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", env.url)  # moto has no price list service
    return env


@pytest.fixture
def gcp_env(env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A service-account key file (a fresh RSA key) whose token_uri is the stand-in."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    creds = tmp_path / "service-account.json"
    creds.write_text(json.dumps({"type": "service_account", "project_id": "my-project", "private_key_id": "k1",
                                 "private_key": pem, "client_email": "prices@my-project.iam.gserviceaccount.com",
                                 "client_id": "1234567890", "token_uri": f"{env.url}/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    env.public_key = key.public_key()
    return env


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runner.cost.live" and r.levelno >= logging.WARNING]


def test_aws_spot_history_from_moto_and_on_demand_from_the_price_list(aws_env, caplog):
    price = live_price("aws", "us-east-1", "g4dn.xlarge")
    assert price is not None, _warnings(caplog)
    # moto answers every zone with its fixed spot price; the price list stand-in with the list price.
    assert (price.spot_per_hour, price.on_demand_per_hour, price.currency) == (0.00001, 0.526, "USD")
    assert today(price.date), price.date
    assert "describe_spot_price_history" in price.source and "get_products" in price.source
    (call,) = [body for kind, body in aws_env.seen if kind == "aws-pricing"]
    assert call["target"] == "AWSPriceListService.GetProducts"
    assert "/us-east-1/pricing/aws4_request" in call["auth"]  # a real SigV4-signed price list request
    filters = {f["Field"]: f["Value"] for f in call["body"]["Filters"]}
    assert filters["instanceType"] == "g4dn.xlarge" and filters["regionCode"] == "us-east-1"
    assert filters["operatingSystem"] == "Linux" and call["body"]["ServiceCode"] == "AmazonEC2"
    # Cached for a day: a second call asks nobody.
    assert live_price("aws", "us-east-1", "g4dn.xlarge") == price
    assert len([k for k, _ in aws_env.seen if k == "aws-pricing"]) == 1
    cache = json.loads((Path(os.environ["RUNNER_HOME"]) / "prices-cache.json").read_text())
    assert today(cache["aws/us-east-1/g4dn.xlarge"]["date"])
    assert not _warnings(caplog)


def test_aws_live_price_wins_in_price_for_spec_and_the_table_stays_the_fallback(aws_env):
    spec = spec_from_dict({"name": "demo", "image": "x", "backend": "aws", "aws": {
        "job_queue": "q", "region": "eu-west-1", "instance_types": ["m5.xlarge"]}})
    price = price_for_spec(spec)
    assert (price.machine, price.on_demand_per_hour, price.spot_per_hour) == ("aws:eu-west-1:m5.xlarge", 0.214,
                                                                             0.00001)
    local = spec_from_dict({"name": "demo", "image": "x", "local": {"imitates": "aws:us-east-1:g4dn.xlarge"}})
    assert price_for_spec(local) == shipped_prices().lookup("aws", "us-east-1", "g4dn.xlarge")  # demos stay put


def test_aws_price_list_denied_falls_back_with_one_warning_and_no_secret(aws_env, caplog):
    aws_env.fail.add("aws")
    spec = spec_from_dict({"name": "demo", "image": "x", "backend": "aws", "aws": {
        "job_queue": "q", "region": "us-east-1", "instance_types": ["g4dn.xlarge"]}})
    with caplog.at_level(logging.WARNING):
        price = price_for_spec(spec)
    assert price == shipped_prices().lookup("aws", "us-east-1", "g4dn.xlarge")
    (warning,) = _warnings(caplog)
    assert "(AccessDeniedException)" in warning and "using the price table" in warning
    assert AWS_SECRET not in caplog.text and "Traceback" not in caplog.text


def test_azure_retail_prices_api(env, caplog):
    price = live_price("azure", "eastus", "Standard_NC4as_T4_v3")
    assert price is not None, _warnings(caplog)
    # Linux pay-as-you-go and Linux Spot; the Windows and Low Priority meters are skipped, page 2 is followed.
    assert (price.on_demand_per_hour, price.spot_per_hour, price.currency) == (0.526, 0.1578, "USD")
    queries = [q for kind, q in env.seen if kind == "azure"]
    assert len(queries) == 2 and queries[1].get("$skip") == "100"
    assert queries[0]["$filter"] == ("armRegionName eq 'eastus' and armSkuName eq 'Standard_NC4as_T4_v3' "
                                     "and priceType eq 'Consumption'")
    assert not _warnings(caplog)


def test_azure_without_a_price_or_with_a_failing_api_falls_back(env, caplog):
    with caplog.at_level(logging.WARNING):
        assert live_price("azure", "eastus", "Standard_D4s_v3") is None
        env.fail.add("azure")
        assert live_price("azure", "westus2", "Standard_NC4as_T4_v3") is None
    first, second = _warnings(caplog)
    assert "no Linux pay-as-you-go price for Standard_D4s_v3 in eastus" in first
    assert "HTTPError 500" in second and "Traceback" not in caplog.text
    spec = spec_from_dict({"name": "demo", "image": "x", "backend": "azure", "azure": {
        "account_url": "https://acct.westus2.batch.azure.com", "pool_id": "p", "vm_size": "Standard_NC4as_T4_v3"}})
    assert price_for_spec(spec) == shipped_prices().lookup("azure", "westus2", "Standard_NC4as_T4_v3")
    assert len([k for k, _ in env.seen if k == "azure"]) == 2  # the failure is cached; not asked again


def test_gcp_billing_catalog_with_default_credentials(gcp_env, caplog):
    price = live_price("gcp", "us-central1", "n1-standard-8+nvidia-tesla-t4")
    assert price is not None, _warnings(caplog)
    on_demand = 8 * 0.031611 + 30 * 0.004237 + 0.35
    spot = 8 * 0.006655 + 30 * 0.000892 + 0.11
    assert price.on_demand_per_hour == pytest.approx(on_demand) and price.spot_per_hour == pytest.approx(spot)
    assert price.source.startswith("gcp cloud billing catalog") and today(price.date)
    (form,) = [form for kind, form in gcp_env.seen if kind == "gcp-token"]
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    from cryptography.hazmat.primitives import serialization
    from google.auth import jwt

    public_pem = gcp_env.public_key.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = jwt.decode(form["assertion"][0], certs=public_pem, audience="https://oauth2.googleapis.com/token")
    assert claims["iss"] == "prices@my-project.iam.gserviceaccount.com"  # signed with the key file's key
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    pages = [q for kind, q in gcp_env.seen if kind == "gcp"]
    assert [p.get("pageToken") for p in pages] == [None, "1"] and pages[0]["currencyCode"] == "USD"
    assert all(p["auth"] == f"Bearer {GCP_TOKEN}" for p in pages)
    assert not _warnings(caplog)


def test_gcp_catalog_denied_or_unknown_sku_falls_back_without_secrets(gcp_env, caplog):
    with caplog.at_level(logging.WARNING):
        assert live_price("gcp", "europe-west4", "n1-standard-8") is None  # no EMEA RAM SKU in the stand-in
        gcp_env.fail.add("gcp")
        assert live_price("gcp", "us-central1", "e2-standard-4") is None
    first, second = _warnings(caplog)
    assert "no OnDemand SKU 'N1 Predefined Instance Ram' in europe-west4" in first
    assert "HTTPError 403" in second
    for secret in (GCP_TOKEN, "PRIVATE KEY"):
        assert secret not in caplog.text
