"""Prints which Azure identity a pod's ManagedIdentityCredential() gets: the token's claims."""
import base64
import json
import sys

from azure.identity import ManagedIdentityCredential

try:
    token = ManagedIdentityCredential().get_token("https://storage.azure.com/.default").token
except Exception as e:
    print(f"REFUSED: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    sys.exit(3)
payload = token.split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print(f"IDENTITY: xms_mirid={claims.get('xms_mirid')} appid={claims.get('appid')}")
