"""Asks IMDS for a token every 50 ms, as a pod's SDK would, and prints one line per ask.

Each ask is one HTTP request to 169.254.169.254 with the SDK's kind of retry: on a connection error
or a 5xx/404/429 it waits 0.2 s, 0.4 s, … (6 retries, 12.6 s in all) and asks again. A line:
    ASK <n> OK retries=<r> mirid=<xms_mirid of the token>
    ASK <n> FAIL retries=<r> error=<last error>
so the test can count the asks that needed a retry, those that failed for good, and whose identity
each token was for (NMI answers with the pod's own identity; the VM's IMDS would not). Before each
retry it prints `RETRY <n> <error>`, so a retried ask says why.

An ask waits up to 10 s for its answer. A gap in NMI shows as a refused or reset connection, which
is retried at once; a slow answer only says the machine is loaded (a new NMI's first answer for an
identity includes its first IMDS call), and the 2 s this used to wait made the chart e2e test fail
on a machine busy with `make bench`.
"""
import base64
import json
import sys
import time
import urllib.error
import urllib.request

URL = ("http://169.254.169.254/metadata/identity/oauth2/token"
       "?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F")
RETRY_DELAYS = [0.2 * 2**i for i in range(6)]


def once():
    req = urllib.request.Request(URL, headers={"Metadata": "true"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = json.load(resp)["access_token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims.get("xms_mirid")


def ask(n):
    last = None
    for retries in range(len(RETRY_DELAYS) + 1):
        try:
            return f"OK retries={retries} mirid={once()}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code not in (404, 429) and e.code < 500:
                return f"FAIL retries={retries} error={last}"
        except Exception as e:  # connection refused, reset, timeout: what a restarting NMI gives
            last = f"{type(e).__name__}: {e}"
        if retries < len(RETRY_DELAYS):
            print(f"RETRY {n} {last}", flush=True)
            time.sleep(RETRY_DELAYS[retries])
    return f"FAIL retries={len(RETRY_DELAYS)} error={last}"


n = 0
while True:
    n += 1
    print(f"ASK {n} {ask(n)}", flush=True)
    time.sleep(0.05)
