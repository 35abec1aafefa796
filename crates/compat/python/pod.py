"""The walkthrough's pod, as the mixed-version tests run it inside a pod's network namespace.

Its code is the walkthrough's: `ManagedIdentityCredential()` with no arguments and no
environment override, so its calls go to 169.254.169.254 and meet the node's interception.

    pod.py token                  prints a token for https://storage.azure.com/
    pod.py blob ACCOUNT_URL       writes then reads a blob in Azurite with the pod's identity
    pod.py poll OUT STOP          asks for a token every 100 ms, with a fresh credential each
                                  time (no SDK cache), until the file STOP exists; one JSON line
                                  per attempt in OUT: {"t", "ms", "ok", "oid"} or {"error"}

A failure here is what the SDK reports after its own retries (IMDS: 404, 410, 429 and 5xx are
retried, with backoff), so `poll` records only final failures.
"""

import base64
import json
import os
import sys
import time

from azure.identity import ManagedIdentityCredential

SCOPE = "https://storage.azure.com/.default"


def oid(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["oid"]


def token():
    print(ManagedIdentityCredential().get_token(SCOPE).token)


def blob(account_url):
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient(account_url=account_url, credential=ManagedIdentityCredential())
    c = svc.get_container_client("seed")
    try:
        c.create_container()
    except Exception as e:  # noqa: BLE001 - the container may be there from an earlier run
        if "ContainerAlreadyExists" not in str(e):
            raise
    c.upload_blob("hello.txt", b"hello from the pod", overwrite=True)
    print(c.download_blob("hello.txt").readall().decode())


def poll(out_path, stop_path):
    with open(out_path, "a", buffering=1) as out:
        while not os.path.exists(stop_path):
            start = time.monotonic()
            record = {"t": time.time()}
            try:
                tok = ManagedIdentityCredential().get_token(SCOPE).token
                record.update(ok=True, oid=oid(tok))
            except Exception as e:  # noqa: BLE001 - every final failure is recorded
                record.update(ok=False, error=f"{type(e).__name__}: {e}"[:500])
            elapsed = time.monotonic() - start
            record["ms"] = round(elapsed * 1000)
            out.write(json.dumps(record) + "\n")
            time.sleep(max(0.0, 0.1 - elapsed))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"token": token, "blob": blob, "poll": poll}[cmd](*args)
