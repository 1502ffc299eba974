"""The production app for the OpenAPI contract test (tests/test_contract.py), with one
change: every webhook host name resolves, to 127.0.0.1.

Whether a webhook's host resolves is a fact of the network, not of the document: the
document gives a URL's shape, and a host that does not resolve is 422 (documented). The
fuzzer invents host names; here they resolve (WEBHOOK_ALLOW_PRIVATE lets 127.0.0.1
pass), so the rest of a submission with a webhook is what gets tested. The deliveries
go to a port nothing listens on: refused at once, retried later, as they would be.
"""

from app import create_app
from app.config import Config
from app.logs import configure_logging
from app.wiring import build_service

LOOPBACK = "127.0.0.1"

config = Config.from_env()
configure_logging(config.log_level)
service = build_service(config)
service.webhooks.resolve = lambda host, port: [LOOPBACK]
app = create_app(config, service)
