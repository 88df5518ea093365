"""Verifies captured idstream deliveries with the Standard Webhooks reference library (PyPI
`standardwebhooks`), independent of idstream's own signer.

Usage: verify.py CAPTURED.json SECRET [SECRET ...]
CAPTURED.json is a list of {"headers": {...}, "body_b64": "..."}. Every delivery must verify
with every secret, and the same delivery with one byte of its body changed must not.
"""
import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    captured = json.load(open(sys.argv[1]))
    secrets = sys.argv[2:]
    if not captured or not secrets:
        print("nothing to verify", file=sys.stderr)
        return 2
    for i, d in enumerate(captured):
        body = base64.b64decode(d["body_b64"])
        for s in secrets:
            payload = Webhook(s).verify(body, d["headers"])
            assert payload["type"] == json.loads(body)["type"], f"delivery {i}: payload differs"
            tampered = body.replace(b'"type"', b'"typE"', 1)
            try:
                Webhook(s).verify(tampered, d["headers"])
            except WebhookVerificationError:
                pass
            else:
                print(f"delivery {i}: a tampered body verified", file=sys.stderr)
                return 1
    print(f"{len(captured)} deliveries verified with {len(secrets)} secrets by standardwebhooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
